import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py
torch.set_num_threads(1)  # tiny models: one thread is as fast and never oversubscribes
