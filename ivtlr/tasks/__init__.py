"""Benchmark tasks: one object per benchmark owns loading, prompt, rationale-to-steps, answer target and
scoring, so training, inference and evaluation read the same definitions.

    task = get_task("m3cot")                     # or "scienceqa", "synth"; options: prompt_style, images...
    examples = task.load(split="test")           # hub id, save_to_disk dir, parquet, json/jsonl
    text = task.prompt(examples[0], mode="infer")
    report = task.score([(ex, generated) for ex, generated in ...])

Importing this package loads no data and downloads nothing.
"""

from __future__ import annotations


from ivtlr.tasks.base import Task
from ivtlr.tasks.examples import DataError, Example, Examples, Prediction
from ivtlr.tasks.m3cot import M3CoTTask
from ivtlr.tasks.prompts import ANSWER_PREFIX, format_prompt, rationale_to_steps, step_target
from ivtlr.tasks.registry import TASKS, get_task, score_file
from ivtlr.tasks.report import ScoreReport
from ivtlr.tasks.scienceqa import ScienceQATask, sqa_categories
from ivtlr.tasks.synth import SynthTask

__all__ = [
    "ANSWER_PREFIX", "DataError", "Example", "Examples", "M3CoTTask", "Prediction", "ScienceQATask",
    "ScoreReport", "SynthTask", "TASKS", "Task", "format_prompt", "get_task", "rationale_to_steps",
    "score_file", "sqa_categories", "step_target",
]
