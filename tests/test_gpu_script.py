"""scripts/gpu_check.sh on its CPU path, on bench's tiny model: the script's commands run unchanged and write the
report (what the GPU machine will run, with the 7B preset, on its first day)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_script_cpu_path(tmp_path):
    out = tmp_path / "benchmarks-gpu.md"
    env = {**os.environ, "DEVICE": "cpu", "PRESET": "none", "IMAGE": "112", "K": "4", "BATCH": "2", "REPEATS": "1",
           "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = out.read_text()
    assert "bench --device cpu" in report and "bench --train --lora --device cpu" in report
    for row in ("ivtlr-compiled", "hf-generate", "recompute", "step (ms)"):
        assert row in report, row
    assert not (tmp_path / "benchmarks-gpu.md.tmp").exists()
