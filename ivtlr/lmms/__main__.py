"""``python -m ivtlr.lmms``: print the folder of ivtlr's lmms-eval tasks (for ``--include_path``)."""

from . import TASKS_DIR

print(TASKS_DIR)
