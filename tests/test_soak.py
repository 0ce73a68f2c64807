"""Kill anywhere: training killed with SIGKILL at random moments (some while a checkpoint is being written), resumed
each time, ends with every logged loss and the final weights equal to an uninterrupted run's.

The default run kills 3 times; ``python -m pytest -m slow tests/test_soak.py`` kills 12 times.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ivtlr.checkpoint import list_checkpoints
from test_train import ivtlr, losses, synth_dir, write_config  # noqa: F401  (synth_dir: the fixture)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_checkpoints(run)[-1] / "model" / "model.safetensors"))


def _kill_at_a_random_moment(cmd: list[str], run: Path, rng: random.Random, in_write: bool) -> str:
    """Start ``cmd`` and SIGKILL it: inside a checkpoint write (a ``.tmp-*`` folder exists) or after a random
    number of new optimizer steps. Returns where it was killed ("write", "step", or "finished")."""
    start = len(losses(run)) if (run / "metrics.jsonl").exists() else 0
    target = start + rng.randint(2, 9)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    where = "finished"
    while proc.poll() is None and time.time() < deadline:
        root = run / "checkpoints"
        if in_write and root.is_dir() and any(p.name.startswith(".tmp-") for p in root.iterdir()):
            where = "write"
            break
        if not in_write and (run / "metrics.jsonl").exists() and len(losses(run)) >= target:
            where = "step"
            break
        time.sleep(0.0005 if in_write else 0.01)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return where if proc.returncode == -signal.SIGKILL else "finished"


def _soak(synth_dir, tmp_path, kills: int, seed: int) -> list[str]:
    full = tmp_path / "full"
    subprocess.run(ivtlr("train", str(write_config(tmp_path / "full.yaml", synth_dir, full, run={"save_every": 3}))),
                   check=True, capture_output=True, timeout=300)
    part = tmp_path / "part"
    cfg = write_config(tmp_path / "part.yaml", synth_dir, part, run={"save_every": 3, "keep_last": 2})
    rng = random.Random(seed)
    where = []
    for i in range(kills):
        cmd = ivtlr("train", str(cfg), *(["--run.resume"] if (part / "checkpoints").is_dir() else
                                         ["--run.overwrite"] if part.exists() else []))
        where.append(_kill_at_a_random_moment(cmd, part, rng, in_write=i % 2 == 1))
        if where[-1] == "finished":
            break
    done = subprocess.run(ivtlr("train", str(cfg), "--run.resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = losses(full), losses(part)
    assert sorted(a) == sorted(b) == list(range(1, 73)), where
    assert max(abs(a[s] - b[s]) for s in a) < 1e-6, where
    wa, wb = _weights(full), _weights(part)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), where
    return where


def test_killed_three_times_equals_uninterrupted(synth_dir, tmp_path):  # noqa: F811
    where = _soak(synth_dir, tmp_path, kills=3, seed=0)
    assert "step" in where


@pytest.mark.slow
def test_killed_twelve_times_equals_uninterrupted(synth_dir, tmp_path):  # noqa: F811
    where = _soak(synth_dir, tmp_path, kills=12, seed=1)
    print("killed at:", where)
    assert where.count("step") >= 3
