"""The project's synthetic visual-reasoning benchmark, read as M3CoT.

Its generator (written elsewhere) saves a `datasets.DatasetDict` with splits "train" and "test" via
`save_to_disk(DIR)`, in exactly M3CoT's schema (`image` a `datasets.Image()`, `choices` a list of strings,
`answer` a letter). This task is the M3CoT task under its own name: aligned prompt, M3CoT's judges, no hub copy
(pass DIR to `load`), and every record must carry an image. What it is not: the generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from ivtlr.data.synth.truth import step_truth
from ivtlr.data.synth.writer import read_config
from ivtlr.tasks.m3cot import M3CoTTask
from ivtlr.tasks.prompts import rationale_to_steps
from ivtlr.tasks.scoring import official_prediction
from ivtlr.tasks.examples import Examples, LETTERS


@dataclass
class SynthTask(M3CoTTask):
    """The synthetic benchmark (M3CoT schema, local directory only; a record without an image is bad)."""

    images: Literal["filter", "require", "any"] = "require"

    name: ClassVar[str] = "synth"
    default_source: ClassVar[str | None] = None
    # official_az (the headline): M3CoT's official procedure with every option letter the question has (A-I for
    # the 9-option questions; M3CoT's own judge stops at F and marks a plain "the answer is G" wrong).
    judge_names: ClassVar[tuple[str, ...]] = ("official_az", "official", "reference")

    def load(
        self, source: str | Path | None = None, split: str = "test", on_error: Literal["raise", "skip"] = "raise"
    ) -> Examples:
        """Load a split of the generator's output directory (see `Task.load`).

        Errors: ValueError when `source` is not an existing local directory (the benchmark has no hub copy).
        """
        if source is None or not Path(source).expanduser().is_dir():
            raise ValueError(f"synth: pass the directory written by the generator's save_to_disk, got {source!r}")
        examples = super().load(source, split, on_error)
        config = read_config(source)
        for flag in ("answer_lead", "step_per_read"):  # how the generator wrote the text
            if config.get(flag, False):
                for example in examples:
                    example.extra[flag] = True
        return examples

    def steps(self, example):
        """The rationale's steps; data generated with ``step_per_read`` keeps every sentence (one read each) as
        its own step instead of the authors' merge into at most 3."""
        if example.extra.get("step_per_read"):
            return rationale_to_steps(example.rationale, max_steps=None)
        return super().steps(example)

    def answer_text(self, example):
        """The answer target; data generated with ``answer_lead`` opens it with the answer's content ("blue.
        Therefore, the answer is F")."""
        plain = super().answer_text(example)
        if example.extra.get("answer_lead"):
            return f"{example.choices[example.answer_index]}. {plain}"
        return plain

    def judge(self, record, judge: str):
        """official_az: (predicted letter or "FAILED", verdict) by M3CoT's procedure over the letters A-Z; the other
        judges are M3CoT's."""
        if judge != "official_az":
            return super().judge(record, judge)
        answer = record["answer"]
        gold = answer if isinstance(answer, str) else LETTERS[answer]
        prediction = official_prediction(record["messages"][-1], record["choices"], letters=LETTERS)
        return prediction, prediction == gold

    def step_truth(self, example):
        """What each rationale step reads (cells, contents), re-derived from the image and the category field;
        see ``ivtlr.data.synth.step_truth``. Raises ValueError naming the record when the image disagrees."""
        try:
            return step_truth(example.image, example.extra.get("category", ""), example.topic,
                              example.choices[example.answer_index], bool(example.extra.get("step_per_read")))
        except ValueError as err:
            raise ValueError(f"synth: record {example.id!r}: {err}") from None

