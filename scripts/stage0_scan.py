"""Stage 0 of ``ivtlr demo`` alone, on many seeds: how often chain-of-thought learns to read the board within
the recipe's epoch cap (the demo's CoT target needs it, and no latent stage can mend a stage 0 that did not).

    python scripts/stage0_scan.py OUT SEED [SEED ...] [--threads 1] [-- DEMO_FLAGS]

For each seed it writes the demo's benchmark (OUT/sS/data) and trains the demo's stage 0 on it with the demo's
own config (``train_config(recipe, ..., "cot")``: the same training as the ``cot`` folder of ``ivtlr demo --seed
S``, on one torch thread as there). It prints one JSON line per seed (every validation), then a Markdown table:
the first step whose validation reaches 75% (the recipe's cot_extra_below), the best validation, the step stage 0
ended at, and the exact match of each written rationale step at its last validation. A seed already trained in
OUT is summarised, not retrained. Run two at once on two cores (one process per seed). DEMO_FLAGS are ``ivtlr
demo``'s recipe flags (e.g. ``-- --hidden 96``), applied as the demo applies them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ivtlr.checkpoint import stage_checkpoints
from ivtlr.commands.demo import DemoRecipe, build_parser, recipe_from_args, train_config, write_benchmark
from ivtlr.train import Trainer


def finished(out: Path) -> bool:
    """Whether ``out``'s stage 0 ran to its end (a folder left by a killed run is refused, not summarised)."""
    cot = out / "cot"
    if (cot / "checkpoints").is_dir() and 0 in stage_checkpoints(cot):
        return True
    if cot.exists():
        raise SystemExit(f"{cot} holds a stage 0 that did not finish: delete {out} to train it again")
    return False


def train_stage0(recipe: DemoRecipe, out: Path, seed: int) -> None:
    if not finished(out):
        write_benchmark(recipe, out / "data", seed)
        cfg = train_config(recipe, out / "data", out / "cot", "qwen2-vl", seed, "cot")
        cfg.run.progress = False
        Trainer(cfg).run()


def summary(out: Path, seed: int, floor: float) -> dict:
    """One seed's stage 0 from its metrics.jsonl: its validations (step, accuracy), the first step at ``floor`` or
    above, the best, the step it ended at, and the exact match of each written step at its last validation."""
    records = [json.loads(line) for line in (out / "cot" / "metrics.jsonl").read_text().splitlines()]
    vals = [(r["step"], r["val_accuracy"]) for r in records if "val_accuracy" in r and "selected_step" not in r]
    matches = [r["val_step_match"] for r in records if "val_step_match" in r]
    return {"seed": seed, "validations": [[step, round(100 * acc, 1)] for step, acc in vals],
            "first_at_floor": next((step for step, acc in vals if acc >= floor), None),
            "best": round(100 * max(acc for _, acc in vals), 1), "end_step": max(r["step"] for r in records),
            "step_match": [round(100 * m) for m in matches[-1]] if matches else None}


def table(rows: list[dict], floor: float) -> str:
    lines = [f"| seed | first validation at {100 * floor:.0f}% or more (step) | best validation (%) | stage 0 ended "
             "(step) | exact match of written steps at the last validation (%) |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["seed"]):
        match = " / ".join(map(str, r["step_match"])) if r["step_match"] else "-"
        lines.append(f"| {r['seed']} | {r['first_at_floor'] or 'none'} | {r['best']:.1f} | {r['end_step']:,} | "
                     f"{match} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("seeds", type=int, nargs="+")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the demo's stage 0 uses 1)")
    p.add_argument("--table", action="store_true", help="only print the Markdown table of the seeds given (trained "
                   "in OUT already)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    demo = build_parser()
    recipe, _ = recipe_from_args(demo.parse_args(argv[cut + 1:]), demo)
    floor = recipe.cot_extra_below
    missing = [seed for seed in args.seeds if args.table and not finished(args.out / f"s{seed}")]
    if missing:
        p.error(f"--table: no finished stage 0 in {args.out} for seed(s) {', '.join(map(str, missing))}")
    if not args.table:
        torch.set_num_threads(args.threads)
        for seed in args.seeds:
            train_stage0(recipe, args.out / f"s{seed}", seed)
            print(json.dumps(summary(args.out / f"s{seed}", seed, floor)), flush=True)
    print(table([summary(args.out / f"s{seed}", seed, floor) for seed in args.seeds], floor))


if __name__ == "__main__":
    main()
