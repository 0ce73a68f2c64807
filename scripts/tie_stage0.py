"""Stage 0 untied, latent stages tied: an untied stage-0 checkpoint made tied, one matrix for the input embeddings
and the output head (the checkpoint's input embeddings; its own output head is dropped). How the experiment in
docs/latent-reasoning.md ("Untied embeddings") was run:

    python scripts/stage0_scan.py runs/scan-untied 0 -- --no-tie-embeddings
    python scripts/tie_stage0.py runs/scan-untied/s0 runs/retie/s0
    python scripts/latent_from_stage0.py runs/retie/s0 runs/retie/s0-latent 0 --threads 2

STAGE0_RUN is a folder with ``data`` and ``cot`` (a seed folder of ``scripts/stage0_scan.py`` or an ``ivtlr demo
--out`` folder) whose stage 0 was trained with ``--no-tie-embeddings``. OUT receives ``data`` (a link to
STAGE0_RUN's) and ``cot`` with the tied stage-0 checkpoint: a DEMO_RUN for ``scripts/latent_from_stage0.py``.
Untied, stage 0 learns to look up every colour (the tied stage 0 of some seeds never learns one or two), but a fed-back
state is then no input embedding the next latent step can look up from; tied again, the input embeddings keep the
look-ups stage 0 learnt, and stage 1's written steps retrain the output side.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ivtlr.checkpoint import load_trainer_state, read_meta, save_checkpoint, stage_checkpoints
from ivtlr.models import load_model, tie_embeddings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage0_run", type=Path)
    p.add_argument("out", type=Path)
    args = p.parse_args()
    stages = stage_checkpoints(args.stage0_run / "cot")
    if 0 not in stages:
        raise SystemExit(f"{args.stage0_run / 'cot'} has no finished stage 0")
    loaded = load_model(stages[0])
    model = loaded.model
    if model.get_output_embeddings().weight is model.get_input_embeddings().weight:
        raise SystemExit(f"{stages[0]} is tied already: train its stage 0 with --no-tie-embeddings")
    tie_embeddings(model)
    config = loaded.config
    config.model = dataclasses.replace(config.model, tiny_tie_embeddings=True)
    args.out.mkdir(parents=True, exist_ok=False)
    (args.out / "data").symlink_to((args.stage0_run / "data").resolve())
    meta = read_meta(stages[0])
    path = save_checkpoint(args.out / "cot", meta["step"], model, loaded.tokenizer, config,
                           load_trainer_state(stages[0]), meta["tag"], keep_last=1)
    print(f"tied {stages[0]} -> {path}")


if __name__ == "__main__":
    main()
