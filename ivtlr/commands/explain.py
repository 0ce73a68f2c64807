"""``ivtlr explain``: pictures of what each latent step looked at, one PNG per question and an offline HTML gallery.

    ivtlr explain --checkpoint CKPT --image board.png --question "..." --choices red green blue --out DIR
    ivtlr explain --checkpoint CKPT --predictions runs/eval/predictions.jsonl --data DIR [--limit N] --out DIR
    ivtlr explain --checkpoint runs/demo/ivtlr/checkpoints/step-001565 --data runs/demo/data --out runs/gallery

With ``--predictions`` (a file of ``ivtlr eval``) the pictures show that file's answers and selected patches, and
the gold answer; the images and questions come from ``--data`` (default: the run's), matched by record id. With
``--data`` alone, the split's questions are answered now (the demo's test questions in one command). The
checkpoint is read for its prompt encoder (how image tokens map back to pixels) and, for one question, to answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..explain import Answer, Question, answer, open_image, predicted_letter, write_gallery
from ..inference import Inference, load_inference
from .flags import add_checkpoint_flags, add_question_flags


def _from_predictions(inf: Inference, path: Path, data: str | None, split: str, limit: int | None) -> list[Answer]:
    summary = path.parent / "summary.json"
    seconds = json.loads(summary.read_text()).get("latency_s", float("nan")) if summary.is_file() else float("nan")
    examples = {ex.id: ex for ex in inf.task.load(data or inf.config.data.source, split)}
    out = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        if limit is not None and len(out) >= limit:
            break
        rec = json.loads(line)
        for key in ("id", "messages", "selected_patches"):
            if key not in rec:
                raise SystemExit(f"{path} line {i + 1}: no {key!r} field (is it a predictions file of ivtlr eval?)")
        ex = examples.get(rec["id"])
        if ex is None:
            raise SystemExit(f"{path} line {i + 1}: record {rec['id']!r} is not in the {split} split of the data")
        output = rec["messages"][-1]
        enc = inf.encoder.encode_prompt(inf.task.prompt(ex, "infer"), ex.image)[1]
        grid = inf.engine.backbone.image_grids(enc)[0]
        boxes = inf.encoder.token_boxes(ex.image.size, grid)
        selected = rec["selected_patches"]
        if any(o >= len(boxes) for step in selected for o in step):
            raise SystemExit(f"{path} line {i + 1}: selected patches beyond the image's {len(boxes)} tokens "
                             "(another checkpoint's predictions?)")
        q = Question(ex.image, ex.question, list(ex.choices), id=ex.id, answer=ex.answer_letter)
        out.append(Answer(q, output, predicted_letter(inf.task, ex, output), rec.get("n_generated", 0), seconds,
                          grid, selected, [[boxes[o] for o in step] for step in selected]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ivtlr explain", description=__doc__.split("\n")[0])
    add_checkpoint_flags(p)
    add_question_flags(p)
    p.add_argument("--predictions", help="a predictions.jsonl of ivtlr eval (instead of one question)")
    p.add_argument("--data", help="the dataset: with --predictions, where its ids come from; alone, its questions "
                   "are answered now (default: the run's)")
    p.add_argument("--split", default="test", help="with --predictions or --data: the split (default test)")
    p.add_argument("--limit", type=int, help="with --predictions or --data: the first N records only")
    p.add_argument("--latents", type=int, help="latent steps when answering (default: the run's last stage)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="answer budget when answering (default 32)")
    p.add_argument("--batch-size", type=int, default=16, help="questions per engine batch with --data (default 16)")
    p.add_argument("--out", required=True, help="output folder: a PNG per question and index.html")
    args = p.parse_args(argv)
    one = bool(args.image or args.question or args.choices)
    if sum([bool(args.predictions), one, bool(args.data and not args.predictions)]) != 1:
        p.error("give one of: --predictions FILE [--data DIR]; --image, --question and --choices; or --data DIR")
    for flag, value, low in (("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1),
                             ("--latents", args.latents, 0), ("--max-new-tokens", args.max_new_tokens, 1)):
        if value is not None and value < low:
            p.error(f"{flag} must be >= {low}")
    inf = load_inference(args.checkpoint, args.base, device=args.device, dtype=args.dtype, log=lambda m: print(m, file=sys.stderr))
    if args.predictions:
        answers = _from_predictions(inf, Path(args.predictions), args.data, args.split, args.limit)
    elif not one:  # the dataset's questions, answered now
        examples = list(inf.task.load(args.data, args.split))[: args.limit]
        questions = [Question(ex.image, ex.question, list(ex.choices), id=ex.id, answer=ex.answer_letter)
                     for ex in examples]
        answers = [a for start in range(0, len(questions), args.batch_size)
                   for a in answer(inf, questions[start:start + args.batch_size], args.latents, args.max_new_tokens)]
    else:
        if not (args.image and args.question and args.choices):
            p.error("one question needs --image, --question and --choices")
        image = open_image(args.image)
        answers = answer(inf, [Question(image, args.question, list(args.choices), id=Path(args.image).stem)],
                         args.latents, args.max_new_tokens)
    page = write_gallery(answers, args.out)
    for a in answers:
        print(f"{a.question.id}: {a.prediction} ({a.ar_steps} steps); cells per step: {a.cells}")
    print(f"wrote {len(answers)} picture(s) and {page}")
    return 0
