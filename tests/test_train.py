"""The trainer for real: a tiny synthetic run, resume after a SIGKILL equals an uninterrupted run, 2-process DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ivtlr.data.synth import generate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, n_train=48, n_test=8, seed=3)
    return out


def write_config(path: Path, data_dir: Path, out: Path, **sections) -> Path:
    cfg = {
        "data": {"task": "synth", "source": str(data_dir), "val_size": 0},
        "model": {"tiny_hidden": 32, "tiny_layers": 2, "tiny_heads": 2, "tiny_vision_depth": 1, "tiny_vocab": 300},
        "curriculum": {"epochs_per_stage": 1, "max_latent_stage": 2},
        "optim": {"lr": 3e-3, "batch_size": 2},
        "latent": {"k": 2},
        "run": {"out_dir": str(out), "progress": False},
    }
    for section, values in sections.items():
        cfg[section].update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def ivtlr(*args) -> list[str]:
    return [sys.executable, "-m", "ivtlr.commands", *args]


def test_tiny_run_trains_through_all_stages(synth_dir, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", synth_dir, tmp_path / "run", data={"val_size": 4},
                       optim={"latent_lr": 1e-3})
    done = subprocess.run(ivtlr("train", str(cfg)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    stages = sorted({r["stage"] for r in rows if "loss" in r})
    assert stages == [0, 1, 2]
    assert [r["stage"] for r in rows if "val_accuracy" in r] == [0, 1, 2]
    assert {(r["stage"], r["lr"]) for r in rows if "loss" in r} == {(0, 3e-3), (1, 1e-3), (2, 1e-3)}  # latent_lr
    steps = losses(run)
    assert len(steps) == 3 * 24 and steps[72] < steps[1]
    tags = [json.loads((p / "meta.json").read_text())["tag"] for p in sorted((run / "checkpoints").iterdir())]
    assert tags == ["stage-1-end", "stage-2-end"]  # keep_last = 2
    assert (run / "config.yaml").is_file() and list((run / "tensorboard").iterdir())


def test_resume_after_kill_equals_uninterrupted(synth_dir, tmp_path):
    full = tmp_path / "full"
    cfg = write_config(tmp_path / "full.yaml", synth_dir, full, run={"save_every": 5})
    subprocess.run(ivtlr("train", str(cfg)), check=True, capture_output=True, timeout=300)

    part = tmp_path / "part"
    cfg2 = write_config(tmp_path / "part.yaml", synth_dir, part, run={"save_every": 5})
    proc = subprocess.Popen(ivtlr("train", str(cfg2)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = part / "checkpoints" / "step-000010"
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = max(losses(part))
    assert killed_at < 72
    subprocess.run(ivtlr("train", str(cfg2), "--run.resume"), check=True, capture_output=True, timeout=300)

    a, b = losses(full), losses(part)
    assert sorted(a) == sorted(b) == list(range(1, 73))
    assert max(abs(a[s] - b[s]) for s in a) < 1e-6


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun gloo test on Linux")
def test_two_process_ddp_keeps_identical_weights(synth_dir, tmp_path):
    cfg = write_config(tmp_path / "ddp.yaml", synth_dir, tmp_path / "ddp", run={"max_steps": 4})
    out = tmp_path / "ranks.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_check.py"), str(cfg), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    assert all(r["ddp"] == "DistributedDataParallel" and r["steps"] == 4 for r in ranks)
    assert ranks[0]["sum"] == ranks[1]["sum"] and ranks[0]["first"] == ranks[1]["first"]


# Golden losses of a short deterministic run: 16 optimizer steps of batch 4 over 16 questions, stage 0 then stage 1
# (two epochs of 4 steps each), one thread. A change to the trainer, the curriculum, the engine or the data
# that moves any loss fails here. Regenerate after an intended change: IVTLR_REGEN_GOLDEN=1 pytest -k golden -s
GOLDEN_LOSSES = [5.716365, 5.550554, 5.416888, 5.282006, 5.154417, 5.030357, 4.896112, 4.771611, 4.666939, 4.586794,
                 4.455381, 4.316902, 4.188389, 4.087655, 3.982523, 3.863888]


def test_golden_losses_of_a_short_run(tmp_path):
    import torch

    from ivtlr.config import TrainConfig
    from ivtlr.train import Trainer

    data = tmp_path / "data"
    generate(data, n_train=16, n_test=4, seed=5)
    cfg = TrainConfig.from_dict({
        "data": {"task": "synth", "source": str(data), "val_size": 0},
        "model": {"tiny_hidden": 32, "tiny_layers": 2, "tiny_heads": 2, "tiny_vision_depth": 1, "tiny_vocab": 300},
        "curriculum": {"epochs_per_stage": 2, "max_latent_stage": 1},
        "optim": {"lr": 3e-3, "batch_size": 4, "seed": 11},
        "latent": {"k": 2},
        "run": {"out_dir": str(tmp_path / "run"), "progress": False},
    })
    assert torch.get_num_threads() == 1  # tests/conftest.py: bit-stable on one thread
    Trainer(cfg).run()
    got = [v for _, v in sorted(losses(tmp_path / "run").items())]
    if os.environ.get("IVTLR_REGEN_GOLDEN"):
        print("GOLDEN_LOSSES =", [round(v, 6) for v in got])
    assert len(got) == 16
    torch.testing.assert_close(torch.tensor(got), torch.tensor(GOLDEN_LOSSES), rtol=1e-4, atol=1e-5)
