"""``ivtlr eval --checkpoint PATH --task NAME [--data PATH] [--mode ...] --out DIR``: evaluate a checkpoint.

Predictions stream to ``OUT/predictions.partial.jsonl`` as batches finish; ``--resume`` continues an interrupted
evaluation from it, and the final files equal an uninterrupted run's. Data-parallel: under ``accelerate launch``
or ``torchrun`` (``WORLD_SIZE`` > 1) every process answers every WORLD_SIZE-th question on its own device
(``cuda:LOCAL_RANK``, or the CPU) into its own stream, and rank 0 merges them; the predictions equal one process's
(batched generation equals one question at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from ..cliargs import add_dataclass_flags, dataclass_from_args, overrides_from_args
from ..engine import LatentConfig
from ..evaluate import (MODES, EvalResult, blind, format_table, prediction_line, record_from_line, run_eval,
                        summarize, write_outputs)
from ..inference import load_inference
from .flags import add_checkpoint_flags


def _parser() -> argparse.ArgumentParser:
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
                   "questions already in its predictions.partial*.jsonl are not generated again")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_dataclass_flags(p, LatentConfig, prefix="latent")
    return p


def _world() -> tuple[int, int, int]:
    """(rank, world size, local rank) as accelerate launch / torchrun set them; (0, 1, 0) otherwise."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def _launch_id() -> str:
    """Names this launch, the same in every process of it (so rank 0 never merges an earlier launch's ranks)."""
    env = os.environ
    return env.get("TORCHELASTIC_RUN_ID") or f"{env.get('MASTER_ADDR', '')}:{env.get('MASTER_PORT', '')}"


def _stream(out: Path, rank: int, world: int) -> Path:
    return out / ("predictions.partial.jsonl" if world == 1 else f"predictions.partial.rank{rank}.jsonl")


def main(argv: list[str] | None = None) -> int:
    """``ivtlr eval --checkpoint PATH --task NAME [--data PATH] [--mode ...]``."""
    p = _parser()
    args = p.parse_args(argv)
    for flag, value, low in (("--latents", args.latents, 0), ("--max-new-tokens", args.max_new_tokens, 1),
                             ("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1)):
        if value is not None and value < low:
            p.error(f"{flag} must be >= {low}, got {value}")
    if args.latents is not None and args.mode not in (None, "ivtlr"):
        p.error(f"--latents is for --mode ivtlr; --mode {args.mode} runs no latent steps")
    rank, world, local = _world()
    out = Path(args.out)
    _check_out(out, args.resume, world)
    device = args.device or (f"cuda:{local}" if world > 1 and torch.cuda.is_available() else None)
    inf = load_inference(args.checkpoint, args.base, task=args.task, prompt_style=args.prompt_style,
                         device=device, dtype=args.dtype, log=print if rank == 0 else (lambda m: None))
    cfg, task = inf.config, inf.task
    engine = inf.with_latent(**vars(dataclass_from_args(args, LatentConfig, "latent", cfg.latent))).engine
    mode = args.mode or ("direct" if cfg.curriculum.no_cot else "ivtlr")
    if rank == 0 and args.mode is None and mode == "direct":
        print("mode direct: the checkpoint was trained to answer at once (curriculum.no_cot)")
    elif rank == 0 and cfg.curriculum.no_cot and mode != "direct":
        print(f"warning: --mode {mode} on a checkpoint trained to answer at once (curriculum.no_cot)")
    data = args.data or cfg.data.source
    loaded, examples = _questions(task, data, args.split, cfg.data.on_error, args.limit, args.blind)
    default_n, default_budget = MODES[mode]
    n = default_n if default_n is not None else (args.latents if args.latents is not None else cfg.curriculum.max_latent_stage)
    budget = args.max_new_tokens or default_budget
    name = row_name(mode, args.blind, overrides_from_args(args, LatentConfig, "latent"))

    ids = {ex.id for ex in examples}
    done = _finished(out, ids) if args.resume else {}
    if done and rank == 0:
        print(f"--resume: {len(done)} of {len(examples)} questions already answered in {out}")
    mine = examples[rank::world]
    result = _answer(engine, inf.encoder, task, mine, n, budget, args.batch_size, name,
                     [done[ex.id] for ex in mine if ex.id in done], _stream(out, rank, world), args.progress and rank == 0)
    if world > 1:
        (out / f"rank{rank}.done.json").write_text(json.dumps({"wall": result.wall, "n_new": result.n_new,
                                                               "launch": _launch_id()}))
        if rank != 0:
            return 0
        result = _merge(engine, task, examples, out, world, result, n, budget, args.batch_size, name)
    result.summary.update({
        "mode": mode, "blind": args.blind, "checkpoint": str(Path(args.checkpoint).resolve()), "base": args.base,
        "data": data if not Path(str(data)).exists() else str(Path(data).resolve()), "split": args.split,
        "limit": args.limit, "on_error": cfg.data.on_error, "skipped": dict(loaded.skipped),
        "filtered": loaded.filtered, "placement": str(inf.placement), "processes": world})
    write_outputs(out, task, examples, result)
    for leftover in [*out.glob("predictions.partial*.jsonl"), *out.glob("rank*.done.json")]:
        leftover.unlink()
    print(format_table([result.summary]))
    print(result.report.format())
    print(f"wrote {out}/predictions.jsonl, summary.json, table.md")
    return 0


def _questions(task, data, split: str, on_error: str, limit: int | None, blind_images: bool):
    """(the loader's Examples, with its skip counts; the questions to evaluate)."""
    loaded = task.load(data, split, on_error=on_error)
    examples = list(loaded)[:limit] if limit else list(loaded)
    if not examples:
        raise ValueError(f"no questions to evaluate in the {split} split of {data}")
    return loaded, [blind(ex) for ex in examples] if blind_images else examples


def _check_out(out: Path, resume: bool, world: int) -> None:
    streams = sorted(out.glob("predictions.partial*.jsonl")) if out.is_dir() else []
    if resume and not streams:
        raise ValueError(f"--resume: no predictions.partial*.jsonl in {out} (nothing to continue; run without --resume)")
    ours = {f"predictions.partial.rank{r}.jsonl" for r in range(world)} | {f"rank{r}.done.json" for r in range(world)}
    others = [f for f in (out.iterdir() if out.is_dir() else []) if f.name not in ours or world == 1]
    if not resume and others:
        raise ValueError(f"{out} is not empty; results are never appended to an old folder (choose a new --out, "
                         "or --resume an interrupted evaluation)")


def _answer(engine, encoder, task, examples, n, budget, batch_size, name, done, stream: Path, progress: bool
            ) -> EvalResult:
    """Answer ``examples`` (those in ``done`` are not generated again), streaming each batch to ``stream``."""
    stream.parent.mkdir(parents=True, exist_ok=True)
    by_id = {ex.id: ex for ex in examples}
    with stream.open("a+b") as f:  # end a line torn by a kill, so that new lines start clean
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
    with stream.open("a") as f, _progress_bar(progress, len(examples), len(done)) as bar:
        def save(records):
            f.write("".join(prediction_line(task, by_id[r.id], r, timing=True) for r in records))
            f.flush()
            os.fsync(f.fileno())

        return run_eval(engine, encoder, task, examples, n, budget, batch_size, name=name, done=done,
                        on_records=save, progress=lambda k, total: bar.update(k - bar.n))


def _merge(engine, task, examples, out: Path, world: int, mine: EvalResult, n, budget, batch_size, name,
           timeout_s: float = 7 * 24 * 3600) -> EvalResult:
    """Rank 0: wait for every process's stream, then score all questions in their order."""
    deadline = time.monotonic() + timeout_s

    def finished(r: int) -> bool:
        try:
            return json.loads((out / f"rank{r}.done.json").read_text())["launch"] == _launch_id()
        except (OSError, ValueError, KeyError):  # absent, being written, or an earlier launch's
            return False

    while not all(finished(r) for r in range(world)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"ranks did not finish within {timeout_s:.0f} s (see {out})")
        time.sleep(0.2)
    done = _finished(out, {ex.id for ex in examples})
    missing = [ex.id for ex in examples if ex.id not in done]
    if missing:
        raise ValueError(f"{len(missing)} question(s) missing from the ranks' streams in {out}, e.g. {missing[0]!r}")
    ranks = [json.loads((out / f"rank{r}.done.json").read_text()) for r in range(world)]
    records = [done[ex.id] for ex in examples]
    n_new, wall = sum(r["n_new"] for r in ranks), max(r["wall"] for r in ranks)
    summary, report = summarize(engine, task, examples, records, mine.latency, wall, n_new, n, budget, batch_size, name)
    return EvalResult(summary, records, report, mine.latency, wall, n_new)


def row_name(mode: str, blind: bool, latent_overrides: dict) -> str:
    """A row's name says what ran: the mode, blind, and every latent option changed from the run's."""
    extra = ", ".join(f"latent.{k}={v}" for k, v in sorted(latent_overrides.items()))
    return mode + (" (blind)" if blind else "") + (f" [{extra}]" if extra else "")


def _finished(out: Path, ids: set[str]) -> dict:
    """id -> record of every stream in ``out`` (any earlier process count). A line that is not JSON is one a
    kill tore: it is skipped, and its question is answered again."""
    records = {}
    for stream in sorted(out.glob("predictions.partial*.jsonl")):
        for i, line in enumerate(stream.read_text().splitlines()):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if str(row.get("id")) not in ids:
                raise ValueError(f"{stream} line {i + 1}: record {row.get('id')!r} is not among the questions being "
                                 "evaluated (another evaluation's folder?)")
            records[str(row["id"])] = record_from_line(row)
    return records


def _progress_bar(enabled: bool, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="q", desc="eval", disable=not enabled, dynamic_ncols=True)
