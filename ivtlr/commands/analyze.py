"""``ivtlr analyze --checkpoint PATH [--task synth] [--data DIR] --out DIR``: diagnostics of the latent steps."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..analyze import AnalysisInputs, format_markdown, run_analysis, write_analysis
from ..checkpoint import stage_checkpoints
from ..inference import load_inference
from .flags import add_checkpoint_flags


def main(argv: list[str] | None = None) -> int:
    """``ivtlr analyze --checkpoint PATH [--task synth] [--data DIR] --out DIR``."""
    p = argparse.ArgumentParser(prog="ivtlr analyze", description="Diagnostics of the latent steps: selections, probes, interventions, scales.")
    add_checkpoint_flags(p)
    p.add_argument("--task", choices=["synth", "m3cot", "scienceqa"], help="default: the run's task")
    p.add_argument("--data", help="dataset (default: the run's)")
    p.add_argument("--latents", type=int, help="latent steps (default: the run's last stage)")
    p.add_argument("--cot-checkpoint", help="the chain-of-thought model for the per-step exact match (default: "
                   "the stage-0 checkpoint of the same run, if there is one)")
    p.add_argument("--n-test", type=int, default=300, help="test questions (default: 300)")
    p.add_argument("--n-train", type=int, default=1000, help="train questions the probes are fit on (default: 1000)")
    p.add_argument("--batch-size", type=int, default=32, help="questions per engine batch (default 32)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="generation budget (a model with explicit steps "
                   "left needs a chain-of-thought-sized one, e.g. 128)")
    p.add_argument("--out", required=True, help="output folder (analysis.json, analysis.md, PNG plots)")
    args = p.parse_args(argv)
    for name in ("n_test", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    inf = load_inference(args.checkpoint, args.base, task=args.task, device=args.device, dtype=args.dtype, log=print)
    source = args.data or inf.config.data.source
    test = list(inf.task.load(source, "test", on_error=inf.config.data.on_error))[: args.n_test]
    train = list(inf.task.load(source, "train", on_error=inf.config.data.on_error))[: args.n_train] if args.n_train else []
    n = args.latents if args.latents is not None else inf.config.curriculum.max_latent_stage
    cot_path = args.cot_checkpoint
    run_dir = Path(args.checkpoint).parent.parent
    if cot_path is None and (run_dir / "checkpoints").is_dir():
        cot_path = stage_checkpoints(run_dir).get(0)
    cot = load_inference(cot_path, task=args.task, device=args.device, dtype=args.dtype) if cot_path else None
    result = run_analysis(AnalysisInputs(inf, test, train, n, cot, batch_size=args.batch_size,
                                         max_new_tokens=args.max_new_tokens))
    result["checkpoint"], result["cot_checkpoint"] = str(args.checkpoint), str(cot_path) if cot_path else None
    md = write_analysis(args.out, result)
    print(format_markdown(result))
    print(f"wrote {md} and analysis.json")
    return 0
