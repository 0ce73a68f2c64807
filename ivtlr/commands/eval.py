"""``ivtlr eval --checkpoint PATH --task NAME [--data PATH] [--mode ...] --out DIR``: evaluate a checkpoint."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..cliargs import add_dataclass_flags, dataclass_from_args, overrides_from_args
from ..engine import LatentConfig
from ..evaluate import MODES, blind, format_table, prediction_line, record_from_line, run_eval, write_outputs
from ..inference import load_inference
from .flags import add_checkpoint_flags


def main(argv: list[str] | None = None) -> int:
    """``ivtlr eval --checkpoint PATH --task NAME [--data PATH] [--mode ...]``."""
    p = argparse.ArgumentParser(prog="ivtlr eval", description="Evaluate a checkpoint on a benchmark.")
    add_checkpoint_flags(p)
    p.add_argument("--task", choices=["synth", "m3cot", "scienceqa"], default=None, help="default: the run's task")
    p.add_argument("--data", help="dataset (hub id or local path); default: the run's")
    p.add_argument("--split", default="test", help="the split to evaluate (default test)")
    p.add_argument("--mode", choices=sorted(MODES), help="ivtlr: latent steps then the answer; cot: a written "
                   "rationale; direct: the answer at once (default: ivtlr, or direct for a No-CoT checkpoint)")
    p.add_argument("--latents", type=int, help="latent steps for --mode ivtlr (default: the run's last stage)")
    p.add_argument("--max-new-tokens", type=int, help="generation budget in tokens (default: ivtlr/direct 16, cot 128)")
    p.add_argument("--limit", type=int, help="first N questions only (N >= 1)")
    p.add_argument("--batch-size", type=int, default=16, help="questions per engine batch (default 16)")
    p.add_argument("--blind", action="store_true", help="replace every image by a gray image (blind baseline)")
    p.add_argument("--prompt-style", choices=["aligned", "reference"], help="aligned: the training prompt; "
                   "reference: the authors' inference prompt (for their checkpoints); default: the run's")
    p.add_argument("--out", required=True, help="a new (or empty) output folder; predictions stream to "
                   "OUT/predictions.partial.jsonl as batches finish")
    p.add_argument("--resume", action="store_true", help="continue an interrupted evaluation in --out: the "
                   "questions already in its predictions.partial.jsonl are not generated again")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_dataclass_flags(p, LatentConfig, prefix="latent")
    args = p.parse_args(argv)
    for flag, value, low in (("--latents", args.latents, 0), ("--max-new-tokens", args.max_new_tokens, 1),
                             ("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1)):
        if value is not None and value < low:
            p.error(f"{flag} must be >= {low}, got {value}")
    if args.latents is not None and args.mode not in (None, "ivtlr"):
        p.error(f"--latents is for --mode ivtlr; --mode {args.mode} runs no latent steps")

    out = Path(args.out)
    partial = out / "predictions.partial.jsonl"
    if args.resume and not partial.is_file():
        raise ValueError(f"--resume: {partial} does not exist (nothing to continue; run without --resume)")
    if not args.resume and out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; results are never appended to an old folder (choose a new --out, "
                         "or --resume an interrupted evaluation)")
    inf = load_inference(args.checkpoint, args.base, task=args.task, prompt_style=args.prompt_style,
                         device=args.device, dtype=args.dtype, log=print)
    cfg, task, encoder = inf.config, inf.task, inf.encoder
    engine = inf.with_latent(**vars(dataclass_from_args(args, LatentConfig, "latent", cfg.latent))).engine
    mode = args.mode or ("direct" if cfg.curriculum.no_cot else "ivtlr")
    if args.mode is None and mode == "direct":
        print("mode direct: the checkpoint was trained to answer at once (curriculum.no_cot)")
    elif cfg.curriculum.no_cot and mode != "direct":
        print(f"warning: --mode {mode} on a checkpoint trained to answer at once (curriculum.no_cot)")
    data = args.data or cfg.data.source
    examples = task.load(data, args.split, on_error=cfg.data.on_error)
    skipped, filtered = dict(examples.skipped), examples.filtered
    examples = list(examples)
    examples = examples[: args.limit] if args.limit else examples
    if not examples:
        raise ValueError(f"no questions to evaluate in the {args.split} split of {data}")
    if args.blind:
        examples = [blind(ex) for ex in examples]
    default_n, default_budget = MODES[mode]
    n = default_n if default_n is not None else (args.latents if args.latents is not None else cfg.curriculum.max_latent_stage)
    done = _finished(partial, {ex.id for ex in examples}) if args.resume else []
    if done:
        print(f"--resume: {len(done)} of {len(examples)} questions already answered in {partial}")
    out.mkdir(parents=True, exist_ok=True)
    by_id = {ex.id: ex for ex in examples}
    with partial.open("a") as stream, _progress_bar(args.progress, len(examples), len(done)) as bar:
        def save(records):
            stream.write("".join(prediction_line(task, by_id[r.id], r, timing=True) for r in records))
            stream.flush()
            os.fsync(stream.fileno())

        result = run_eval(engine, encoder, task, examples, n, args.max_new_tokens or default_budget, args.batch_size,
                          name=row_name(mode, args.blind, overrides_from_args(args, LatentConfig, "latent")),
                          done=done, on_records=save, progress=lambda k, total: bar.update(k - bar.n))
    result.summary.update({
        "mode": mode, "blind": args.blind, "checkpoint": str(Path(args.checkpoint).resolve()), "base": args.base,
        "data": data if not Path(str(data)).exists() else str(Path(data).resolve()), "split": args.split,
        "limit": args.limit, "on_error": cfg.data.on_error, "skipped": skipped, "filtered": filtered,
        "placement": str(inf.placement)})
    write_outputs(out, task, examples, result)
    partial.unlink()
    print(format_table([result.summary]))
    print(result.report.format())
    print(f"wrote {out}/predictions.jsonl, summary.json, table.md")
    return 0


def row_name(mode: str, blind: bool, latent_overrides: dict) -> str:
    """A row's name says what ran: the mode, blind, and every latent option changed from the run's."""
    extra = ", ".join(f"latent.{k}={v}" for k, v in sorted(latent_overrides.items()))
    return mode + (" (blind)" if blind else "") + (f" [{extra}]" if extra else "")


def _finished(partial: Path, ids: set[str]) -> list:
    """The records of an interrupted run's stream; a torn last line (killed mid-write) is dropped."""
    records, lines, kept = [], partial.read_text().splitlines(), []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                break  # the line being written when the run was killed
            raise ValueError(f"{partial} line {i + 1}: not valid JSON") from None
        kept.append(line + "\n")
        if str(row.get("id")) not in ids:
            raise ValueError(f"{partial} line {i + 1}: record {row.get('id')!r} is not among the questions being "
                             "evaluated (another evaluation's folder?)")
        records.append(record_from_line(row))
    partial.write_text("".join(kept))  # without a torn last line, so that new lines append cleanly
    return records


def _progress_bar(enabled: bool, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="q", desc="eval", disable=not enabled, dynamic_ncols=True)
