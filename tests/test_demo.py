"""The quick demo end to end: data, both trainings, every evaluation mode, the report and its plots."""

from __future__ import annotations

import json
import subprocess
import sys


def test_quick_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "ivtlr.cli", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())["results"]
    names = {r["name"] for r in results}
    for mode in ("IVT-LR (3 latent steps)", "CoT (stage-0 model)", "No-CoT", "blind IVT-LR (gray image)",
                 "ablation: no latent text", "ablation: no latent vision", "ablation: no latent part (n=0)",
                 "stage 1 (1 latent steps)", "stage 2 (2 latent steps)", "IVT-LR K=1"):
        assert mode in names
    for r in results:
        assert r["n_questions"] == 24 and 0.0 <= r["accuracy"]["official"] <= 1.0 and r["ar_steps"] >= 1
        assert r["latency_s"] > 0 and r["throughput_q_per_s"] > 0
    report = (out / "report.md").read_text()
    assert "| IVT-LR (3 latent steps) |" in report and "## Training loss per stage" in report
    for plot in ("accuracy_vs_steps.png", "accuracy_per_stage.png", "ablations.png"):
        assert (out / plot).stat().st_size > 1000
