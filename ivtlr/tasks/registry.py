"""The registry of benchmark tasks by name, and scoring a predictions file with a task's judges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ivtlr.tasks.base import Task
from ivtlr.tasks.m3cot import M3CoTTask
from ivtlr.tasks.predictions import read_jsonl
from ivtlr.tasks.scienceqa import ScienceQATask
from ivtlr.tasks.synth import SynthTask

TASKS: dict[str, type[Task]] = {"m3cot": M3CoTTask, "scienceqa": ScienceQATask, "synth": SynthTask}


def get_task(name: str, **options: Any) -> Task:
    """The task registered under `name`, built with `options` (e.g. prompt_style="reference").

    Errors: KeyError for an unknown name; TypeError/ValueError for an unknown or invalid option.
    """
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name](**options)


def score_file(
    path: str | Path,
    judge: str | None = None,
    task: str = "m3cot",
    verdicts: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Score a predictions JSONL (ours or another model's) and print the accuracy table.

    Args:
        path: the JSONL file.
        judge: "official" or "reference" (M3CoT), "reference" (ScienceQA), "all" (side by side); None means
            the task's default judge (M3CoT: "official").
        task: the task name ("m3cot", "synth", "scienceqa").
        verdicts: also print, and return under "verdicts", the per-id predictions and verdicts.
        quiet: print nothing.
    Returns:
        `ScoreReport.to_dict(verdicts)` plus "file".
    Errors:
        DataError for a bad record, ValueError for an unknown judge, OSError for an unreadable file.
    """
    the_task = get_task(task)
    the_task.resolve_judges(judge)  # an unknown judge fails before the file is read
    report = the_task.score_records(read_jsonl(path, the_task.record_fields), judge)
    if not quiet:
        print(report.format(verdicts=verdicts))
    return {"file": str(path), **report.to_dict(verdicts=verdicts)}
