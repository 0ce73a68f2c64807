"""Benchmark tasks: one object per benchmark owns loading, prompt, rationale-to-steps, answer target and
scoring, so training, inference and evaluation read the same definitions.

    task = get_task("m3cot")                     # or "scienceqa", "synth"; options: prompt_style, images...
    examples = task.load(split="test")           # hub id, save_to_disk dir, parquet, json/jsonl
    text = task.prompt(examples[0], mode="infer")
    report = task.score([(ex, generated) for ex, generated in ...])

Importing this package loads no data and downloads nothing.
"""

from __future__ import annotations

from typing import Any

from ivtlr.tasks.base import (
    ANSWER_PREFIX,
    DataError,
    Example,
    Examples,
    Prediction,
    ScoreReport,
    Task,
    format_prompt,
    rationale_to_steps,
    step_target,
)
from ivtlr.tasks.m3cot import M3CoTTask
from ivtlr.tasks.scienceqa import ScienceQATask, sqa_categories
from ivtlr.tasks.scoring import score_file, score_main
from ivtlr.tasks.synth import SynthTask

TASKS: dict[str, type[Task]] = {"m3cot": M3CoTTask, "scienceqa": ScienceQATask, "synth": SynthTask}


def get_task(name: str, **options: Any) -> Task:
    """The task registered under `name`, built with `options` (e.g. prompt_style="reference").

    Errors: KeyError for an unknown name; TypeError/ValueError for an unknown or invalid option.
    """
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name](**options)


__all__ = [
    "ANSWER_PREFIX", "DataError", "Example", "Examples", "M3CoTTask", "Prediction", "ScienceQATask",
    "ScoreReport", "SynthTask", "TASKS", "Task", "format_prompt", "get_task", "rationale_to_steps",
    "score_file", "score_main", "sqa_categories", "step_target",
]
