"""Stage 0 of ``ivtlr demo`` alone, on many seeds: how often chain-of-thought learns to read the board within
the recipe's epoch cap (the demo's CoT target needs it, and no latent stage can mend a stage 0 that did not).

    python scripts/stage0_scan.py OUT SEED [SEED ...] [--threads 1] [-- DEMO_FLAGS]

For each seed it writes the demo's benchmark (OUT/sS/data) and trains the demo's stage 0 on it with the demo's
own config (``train_config(RECIPES["full"], ..., "cot")``: the same training as ``ivtlr demo --seed S``'s
``cot`` folder, one torch thread as there), then prints one row per seed from its metrics.jsonl: the validation
accuracy at each validation, the best, the step stage 0 ended and the selected step. A seed already trained in
OUT is summarised again, not retrained. Run two at once on two cores (one process per seed). DEMO_FLAGS are
``ivtlr demo``'s recipe flags (e.g. ``-- --hidden 96``), applied as the demo applies them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ivtlr.commands.demo import DemoRecipe, build_parser, recipe_from_args, train_config
from ivtlr.data.synth import generate
from ivtlr.train import Trainer


def train_stage0(recipe: DemoRecipe, out: Path, seed: int) -> None:
    data = out / "data"
    if not (out / "cot" / "metrics.jsonl").is_file():
        generate(data, n_train=recipe.n_train, n_test=recipe.n_test, seed=seed, n_val=recipe.n_val, **recipe.synth)
        cfg = train_config(recipe, data, out / "cot", "qwen2-vl", seed, "cot")
        cfg.run.progress = False
        Trainer(cfg).run()


def summary(out: Path, seed: int) -> dict:
    records = [json.loads(line) for line in (out / "cot" / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in records if "val_accuracy" in r and "selected_step" not in r]
    selected = next((r for r in records if "selected_step" in r), None)
    last = max(r["step"] for r in records)
    return {"seed": seed, "validations": [round(100 * r["val_accuracy"], 1) for r in vals],
            "best": round(100 * max(r["val_accuracy"] for r in vals), 1), "last_step": last,
            "selected_step": selected["selected_step"] if selected else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("seeds", type=int, nargs="+")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the demo's stage 0 uses 1)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    demo = build_parser()
    recipe, _ = recipe_from_args(demo.parse_args(argv[cut + 1:]), demo)
    torch.set_num_threads(args.threads)
    for seed in args.seeds:
        train_stage0(recipe, args.out / f"s{seed}", seed)
        row = summary(args.out / f"s{seed}", seed)
        print(json.dumps(row), flush=True)
        with (args.out / "scan.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
