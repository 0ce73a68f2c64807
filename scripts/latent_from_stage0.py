"""The demo's latent stages 1-3 again, from the stage-0 checkpoint of a finished ``ivtlr demo`` run, with one
latent option changed: how the experiments on the order of [z_t, h_t] in docs/latent-reasoning.md were run.

    python scripts/latent_from_stage0.py DEMO_RUN OUT SEED [--order text_first] [--selection ahead] ...

DEMO_RUN is an ``ivtlr demo --out`` folder (its ``data`` and ``cot`` are used); OUT receives the run (checkpoints,
metrics.jsonl). Evaluate it with ``ivtlr analyze --checkpoint OUT/checkpoints/<last> --data DEMO_RUN/data``.
One torch thread by default (run it beside another job on two cores).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from ivtlr.checkpoint import stage_checkpoints
from ivtlr.commands.demo import RECIPES, train_config
from ivtlr.train import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("demo_run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("seed", type=int)
    p.add_argument("--order", choices=("vision_first", "text_first"))
    p.add_argument("--selection", choices=("behind", "ahead"), help="ahead needs --order text_first")
    p.add_argument("--latent-grad", choices=("detach", "full"))
    p.add_argument("--feedback-norm", choices=("none", "embedding"))
    p.add_argument("--k", type=int, help="image tokens per latent step (the recipe's: 1)")
    p.add_argument("--lr", type=float, help="learning rate of the latent stages (the recipe's: 1e-3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the demo's latent stages use 2 when "
                   "nothing trains beside them)")
    args = p.parse_args()
    changes = {k: v for k, v in (("order", args.order), ("selection", args.selection),
                                 ("latent_grad", args.latent_grad), ("feedback_norm", args.feedback_norm),
                                 ("k", args.k), ("lr", args.lr)) if v is not None}
    stages = stage_checkpoints(args.demo_run / "cot")
    if 0 not in stages:
        p.error(f"{args.demo_run / 'cot'} has no stage-0 checkpoint (run `ivtlr demo --out {args.demo_run}` first)")
    torch.set_num_threads(args.threads)
    try:  # a bad combination (e.g. --selection ahead without --order text_first) before anything is written
        cfg = train_config(replace(RECIPES["full"], **changes), args.demo_run / "data", args.out, "qwen2-vl",
                           args.seed, "latent", stages[0])
    except ValueError as err:
        p.error(str(err))
    print(f"latent stages from {stages[0]} with {changes or 'the recipe unchanged'}", flush=True)
    Trainer(cfg).run()


if __name__ == "__main__":
    main()
