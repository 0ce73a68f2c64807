import os
import sys

import pytest
import torch

from ivtlr.config import TrainConfig
from ivtlr.data.synth import generate
from ivtlr.train import Trainer

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py
torch.set_num_threads(1)  # tiny models: one thread is as fast and never oversubscribes
os.environ["OMP_NUM_THREADS"] = "1"  # nor do the processes the tests start (trainings, benches, DDP ranks)
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ...: the suite runs on every core (pytest -n)
if _WORKER and hasattr(os, "sched_setaffinity"):
    # one core per worker: a demo or bench inside a test sizes its threads by the cores it may use
    # (ivtlr.placement.usable_cores), so two workers never run more threads than there are cores
    _cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {_cores[int(_WORKER.removeprefix("gw")) % len(_cores)]})


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core this process may use."""
    from ivtlr.placement import usable_cores

    return usable_cores()


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, n_train=16, n_test=6, seed=3)
    return out


@pytest.fixture(scope="session")
def qwen_checkpoint(synth_dir, tmp_path_factory):
    """A tiny Qwen2-VL run checkpoint after two optimizer steps of the last latent stage."""
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig.from_dict({
        "model": {"tiny_hidden": 32, "tiny_layers": 2, "tiny_heads": 2, "tiny_vision_depth": 1, "tiny_vocab": 320},
        "data": {"task": "synth", "source": str(synth_dir), "val_size": 0},
        "curriculum": {"epochs_per_stage": 1, "max_latent_stage": 2, "first_stage": 2},
        "optim": {"lr": 1e-2, "batch_size": 4},
        "latent": {"k": 2},
        "run": {"out_dir": str(out), "progress": False, "max_steps": 2},
    })
    Trainer(cfg).run()
    return sorted((out / "checkpoints").iterdir())[-1]
