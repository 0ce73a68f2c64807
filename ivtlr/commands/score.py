"""``ivtlr score [--task m3cot] FILE.jsonl [--judge ...] [--json]``: score a predictions file."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from ..tasks.registry import TASKS, score_file


def main(argv: Sequence[str] | None = None) -> int:
    """`ivtlr score [--task m3cot] FILE.jsonl [--judge official|reference|all] [--json]`.

    Prints the accuracy table (overall, per domain, per topic; per category for ScienceQA), or with --json a
    JSON object that also holds the per-id verdicts. A bad file raises an error naming the file, line and record (``ivtlr`` prints it as one line, exit status 2).
    """
    parser = argparse.ArgumentParser(prog="ivtlr score", description="Score a predictions JSONL file.")
    parser.add_argument("file", help="predictions JSONL (M3CoT custom format)")
    parser.add_argument("--task", default="m3cot", choices=sorted(TASKS), help="benchmark (default: m3cot)")
    parser.add_argument(
        "--judge", choices=sorted({j for t in TASKS.values() for j in t.judge_names}) + ["all"], default=None,
        help="judge (default: the task's own: 'official' for M3CoT, 'official_az' for synth); 'all' shows every "
             "judge side by side",
    )
    parser.add_argument("--json", action="store_true", help="print JSON, per-id verdicts included")
    args = parser.parse_args(argv)
    result = score_file(args.file, judge=args.judge, task=args.task, verdicts=args.json, quiet=args.json)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0
