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

from ivtlr.tasks.base import Examples
from ivtlr.tasks.m3cot import M3CoTTask


@dataclass
class SynthTask(M3CoTTask):
    """The synthetic benchmark (M3CoT schema, local directory only; a record without an image is bad)."""

    images: Literal["filter", "require", "any"] = "require"

    name: ClassVar[str] = "synth"
    default_source: ClassVar[str | None] = None

    def load(
        self, source: str | Path | None = None, split: str = "test", on_error: Literal["raise", "skip"] = "raise"
    ) -> Examples:
        """Load a split of the generator's output directory (see `Task.load`).

        Errors: ValueError when `source` is not an existing local directory (the benchmark has no hub copy).
        """
        if source is None or not Path(source).expanduser().is_dir():
            raise ValueError(f"synth: pass the directory written by the generator's save_to_disk, got {source!r}")
        return super().load(source, split, on_error)
