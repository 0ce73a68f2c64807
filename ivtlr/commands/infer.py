"""``ivtlr infer``: answer questions about images and show which patches each latent step looked at.

    ivtlr infer --checkpoint runs/demo/ivtlr/checkpoints/step-000375 --image board.png \\
        --question "Start at the white cell and follow the dots twice. What colour is the dot of the cell you reach?" \\
        --choices green red yellow blue
    ivtlr infer --checkpoint CKPT --questions questions.jsonl   # one {"image", "question", "choices"} per line

For each question: the generated text, the predicted option, the autoregressive steps, and per latent step
the selected image tokens as (row, column) cells of the image-token grid, in insertion order.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..explain import Question, answer, open_image
from ..inference import load_inference
from .flags import add_checkpoint_flags, add_question_flags


def _questions(args) -> list[dict]:
    if args.questions:
        rows = []
        for i, line in enumerate(Path(args.questions).read_text().splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{args.questions} line {i + 1}: not valid JSON ({err})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{args.questions} line {i + 1}: expected an object with image, question, choices")
            missing = {"image", "question", "choices"} - set(row)
            if missing:
                raise ValueError(f"{args.questions} line {i + 1}: missing {sorted(missing)}")
            if not isinstance(row["choices"], list):
                raise ValueError(f"{args.questions} line {i + 1}: choices must be a list of option strings, "
                                 f"got {row['choices']!r}"[:160])
            rows.append(row)
        if not rows:
            raise ValueError(f"{args.questions}: no questions in the file")
        return rows
    if not (args.image and args.question and args.choices):
        raise ValueError("give --image, --question and --choices, or --questions FILE.jsonl")
    return [{"image": args.image, "question": args.question, "choices": args.choices}]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ivtlr infer", description=__doc__.split("\n")[0])
    add_checkpoint_flags(p)
    add_question_flags(p)
    p.add_argument("--questions", help="JSONL with image, question, choices per line")
    p.add_argument("--latents", type=int, help="latent steps (default: the run's last stage)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="answer budget in tokens (default 32)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.latents is not None and args.latents < 0:
        p.error("--latents must be >= 0")
    if args.max_new_tokens < 1:
        p.error("--max-new-tokens must be >= 1")

    rows = _questions(args)
    questions = []
    for i, row in enumerate(rows):
        image = open_image(row["image"], f"question {i + 1}")
        try:
            questions.append(Question(image, row["question"], row["choices"], id=str(i + 1)))
        except ValueError as err:
            raise ValueError(f"{args.questions or 'the command line'}: {err}") from None
    inf = load_inference(args.checkpoint, args.base, device=args.device, dtype=args.dtype,
                         log=lambda m: print(m, file=sys.stderr))
    results = [a.to_dict() for a in answer(inf, questions, args.latents, args.max_new_tokens)]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"Q: {r['question']}\nA: {r['output']!r} -> {r['prediction']} ({r['ar_steps']} steps)")
            for t, cells in enumerate(r["selected_cells"], 1):
                print(f"  latent step {t}: cells (row, col) of the {r['grid'][0]}x{r['grid'][1]} grid: {cells}")
    return 0
