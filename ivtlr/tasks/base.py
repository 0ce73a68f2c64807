"""The `Task` interface every benchmark implements (`m3cot.py`, `scienceqa.py`, `synth.py`)."""

from __future__ import annotations

import logging

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from PIL import Image

from ivtlr.tasks.examples import (
    DUPLICATE_ID,
    MISSING_IMAGE,
    BadRecord,
    DataError,
    Example,
    Examples,
    Prediction,
    decode_image,
    image_is_missing,
    open_source,
)
from ivtlr.tasks.predictions import write_jsonl
from ivtlr.tasks.prompts import ANSWER_PREFIX, format_prompt, rationale_to_steps, step_target
from ivtlr.tasks.report import ScoreReport, Tally

logger = logging.getLogger(__name__)


@dataclass
class Task:
    """A benchmark: loading, prompt, steps, answer target and scoring in one place.

    Options (validated at construction):
        prompt_style: "aligned" (default; training and inference see the same prompt, the training form, with
            a non-empty context prepended) or "reference" (the authors' exact, phase-dependent prompts).
        images: "filter" (drop records without an image: the image subsets the paper reports), "require" (a
            record without an image is a bad record) or "any" (keep all).
    Subclasses set `name`, `default_source`, `judge_names` (first = default judge) and implement
    `example_from_row`, `to_record`, `judge` and `groups`.
    """

    prompt_style: Literal["aligned", "reference"] = "aligned"
    images: Literal["filter", "require", "any"] = "filter"

    name: ClassVar[str] = ""
    default_source: ClassVar[str | None] = None
    judge_names: ClassVar[tuple[str, ...]] = ()
    # Required keys of one record of the predictions JSONL.
    record_fields: ClassVar[tuple[str, ...]] = ("id", "choices", "answer", "messages")
    # How the reference inference prompt differs from the training one (keyword arguments of format_prompt).
    reference_infer_format: ClassVar[dict[str, Any]] = {"answer_newline": False}

    def __post_init__(self) -> None:
        if self.prompt_style not in ("aligned", "reference"):
            raise ValueError(f"prompt_style must be 'aligned' or 'reference', got {self.prompt_style!r}")
        if self.images not in ("filter", "require", "any"):
            raise ValueError(f"images must be 'filter', 'require' or 'any', got {self.images!r}")

    # -- loading ------------------------------------------------------------------------------------------

    def load(
        self, source: str | Path | None = None, split: str = "test", on_error: Literal["raise", "skip"] = "raise"
    ) -> Examples:
        """Load one split as validated examples.

        Args:
            source: see `open_source`; None means the task's `default_source` (a hub id).
            split: split name ("train", "validation", "test").
            on_error: "raise" (default) stops at the first bad record; "skip" leaves bad records out, counts
                them per reason in `Examples.skipped` (ids in `Examples.problems`) and logs a one-line summary.
        Returns:
            An `Examples` list.
        Errors:
            DataError naming the source, record id and reason (missing field, empty or bad choices, answer
            out of range, missing image under images="require", unreadable image; a duplicate id, which
            on_error="skip" does not skip); see `open_source` for
            source errors.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        source = self.default_source if source is None else source
        if source is None:
            raise ValueError(f"task {self.name!r} has no default source: pass the dataset directory")
        data, where, base_dir = open_source(source, split)
        out = Examples(source=where, split=split)
        first_index: dict[str, int] = {}
        for index, row in enumerate(data):
            record_id = self.record_id(row, index, split)
            if record_id in first_index:  # always an error: an id names one question (predictions are matched by id)
                raise DataError(where, record_id, DUPLICATE_ID, f"rows {first_index[record_id]} and {index} share "
                                "this id")
            first_index[record_id] = index
            try:
                raw_image = row.get("image")
                if image_is_missing(raw_image):
                    if self.images == "filter":
                        out.filtered += 1
                        continue
                    if self.images == "require":
                        raise BadRecord(MISSING_IMAGE, "the record has no image")
                    image = None
                else:
                    image = decode_image(raw_image, base_dir)
                out.append(self.example_from_row(row, record_id, image))
            except BadRecord as bad:
                if on_error == "raise":
                    raise DataError(where, record_id, bad.reason, bad.detail) from None
                out.skipped[bad.reason] += 1
                out.problems.append((record_id, bad.reason, bad.detail))
        if out.skipped:
            reasons = ", ".join(f"{r}={n}" for r, n in sorted(out.skipped.items()))
            first = ", ".join(p[0] for p in out.problems[:5])
            logger.warning(
                "%s: skipped %d bad records (%s); first ids: %s", where, len(out.problems), reasons, first
            )
        return out

    def record_id(self, row: Mapping[str, Any], index: int, split: str) -> str:
        """The id used in messages and predictions: the row's `id`, else "#<row index>"."""
        value = row.get("id")
        return f"#{index}" if value is None or value == "" else str(value)

    def example_from_row(self, row: Mapping[str, Any], record_id: str, image: Image.Image | None) -> Example:
        """Convert one raw row (image already decoded). Errors: BadRecord."""
        raise NotImplementedError

    # -- prompt and targets -------------------------------------------------------------------------------

    def prompt(self, example: Example, mode: Literal["train", "infer"] = "train") -> str:
        """The user-turn text for training or inference (the image goes separately).

        Under prompt_style="aligned" both modes give the same text. Errors: ValueError for another mode.
        """
        if mode not in ("train", "infer"):
            raise ValueError(f"mode must be 'train' or 'infer', got {mode!r}")
        if self.prompt_style == "aligned":
            return format_prompt(example.question, example.choices, context=example.context)
        if mode == "train":
            return format_prompt(example.question, example.choices)
        return format_prompt(example.question, example.choices, **self.reference_infer_format)

    def steps(self, example: Example) -> list[str]:
        """The example's reasoning steps (0-3), see `rationale_to_steps`."""
        return rationale_to_steps(example.rationale)

    def step_targets(self, example: Example) -> list[str]:
        """The steps as trained: each followed by a newline."""
        return [step_target(s) for s in self.steps(example)]

    def step_truth(self, example: Example):
        """What each rationale step of `example` reads, where the benchmark knows it (the synthetic one does: a
        `StepTruth` of cells and contents); None for benchmarks without such ground truth."""
        return None

    def answer_token(self, example: Example) -> str:
        """What follows ANSWER_PREFIX in the target: the gold letter (ScienceQA may use the digit)."""
        return example.answer_letter

    def answer_text(self, example: Example) -> str:
        """The answer target without eos, e.g. "Therefore, the answer is B"."""
        return ANSWER_PREFIX + self.answer_token(example)

    # -- scoring ------------------------------------------------------------------------------------------

    def to_record(self, example: Example, output: str, prompt: str | None = None) -> dict[str, Any]:
        """One line of the predictions JSONL (M3CoT's "custom" format plus task extras)."""
        raise NotImplementedError

    def judge(self, record: Mapping[str, Any], judge: str) -> tuple[Any, bool]:
        """(prediction, correct) of one judge on one record."""
        raise NotImplementedError

    def groups(self, record: Mapping[str, Any]) -> dict[str, list[str]]:
        """Group name -> the keys this record counts under (e.g. {"domain": ["science"]})."""
        raise NotImplementedError

    def resolve_judges(self, judge: str | None) -> tuple[str, ...]:
        """None -> the default judge; "all" -> every judge; else that judge. Errors: ValueError."""
        if judge is None:
            return self.judge_names[:1]
        if judge == "all":
            return self.judge_names
        if judge not in self.judge_names:
            raise ValueError(f"task {self.name!r} has judges {list(self.judge_names)}, not {judge!r}")
        return (judge,)

    def score_records(self, records: Iterable[Mapping[str, Any]], judge: str | None = "all") -> ScoreReport:
        """Score predictions JSONL records (ours or another model's). `judge`: see `resolve_judges`."""
        judges = self.resolve_judges(judge)
        overall = {j: Tally() for j in judges}
        groups: dict[str, dict[str, dict[str, Tally]]] = {}
        verdicts = []
        for record in records:
            verdict: dict[str, Any] = {"id": record["id"], "answer": record["answer"]}
            cells = [
                groups.setdefault(group, {}).setdefault(key, {j: Tally() for j in judges})
                for group, keys in self.groups(record).items()
                for key in keys
            ]
            for j in judges:
                prediction, correct = self.judge(record, j)
                verdict[j] = {"prediction": prediction, "correct": correct}
                for t in [overall[j]] + [cell[j] for cell in cells]:
                    t.correct += int(correct)
                    t.total += 1
            verdicts.append(verdict)
        return ScoreReport(self.name, judges, overall, groups, verdicts)

    def records(self, predictions: Iterable[Prediction | tuple]) -> list[dict[str, Any]]:
        """Predictions -> predictions JSONL records. Items are `Prediction`s or (example, output[, prompt])."""
        return [self.to_record(*Prediction(*p)) for p in predictions]

    def write_predictions(self, path: str | Path, predictions: Iterable[Prediction | tuple]) -> Path:
        """Write predictions as M3CoT's custom JSONL (overwriting `path`); `ivtlr score` reads it back."""
        return write_jsonl(path, self.records(predictions))

    def score(self, predictions: Iterable[Prediction | tuple], judge: str | None = "all") -> ScoreReport:
        """Score generated outputs with every judge (default) side by side; the prompt defaults to the task's
        inference prompt. Same path as `score_file`, through the JSONL records."""
        return self.score_records(self.records(predictions), judge)
