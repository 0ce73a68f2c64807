"""The `Example` record, its errors, and reading a dataset split with a bad-record policy (`datasets` is
imported only when something is loaded)."""

from __future__ import annotations

import io
import string
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image



LETTERS = string.ascii_uppercase

# Reasons a record is rejected; the keys of `Examples.skipped`.
MISSING_FIELD = "missing_field"
EMPTY_CHOICES = "empty_choices"
BAD_CHOICES = "bad_choices"
ANSWER_OUT_OF_RANGE = "answer_out_of_range"
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"
DUPLICATE_ID = "duplicate_id"  # never skipped: always an error


@dataclass
class Example:
    """One multiple-choice question, benchmark-neutral.

    Fields: `id` (the record id, unique within a split); `question`; `choices` (option texts, at least one);
    `answer_index` (0-based, always valid for `choices`); `rationale` (the annotated chain of thought, may be
    empty); `image` (PIL image, opened lazily, or None); `context` (M3CoT's context, ScienceQA's hint, may be
    empty); `domain`, `topic` (for per-group accuracy); `extra` (other metadata: category, grade, subject...).
    """

    id: str
    question: str
    choices: list[str]
    answer_index: int
    rationale: str = ""
    image: Image.Image | None = None
    context: str = ""
    domain: str = ""
    topic: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def answer_letter(self) -> str:
        """The gold option letter ("A" for index 0)."""
        return LETTERS[self.answer_index]


class DataError(ValueError):
    """A bad record: names the source, the record id and the reason (one of the reason keys above)."""

    def __init__(self, source: str, record_id: str, reason: str, detail: str) -> None:
        super().__init__(f"{source}: record {record_id!r}: {reason}: {detail}")
        self.source, self.record_id, self.reason, self.detail = source, record_id, reason, detail


class BadRecord(Exception):
    """Raised by a task's row converter; `Task.load` turns it into a `DataError` or a skip."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class Examples(list[Example]):
    """The examples a loader kept (a plain list of `Example`), plus what it left out.

    Attributes: `source` and `split` (where they came from); `filtered` (records dropped by the image-only
    selection, not errors); `skipped` (Counter: reason -> bad records skipped under on_error="skip");
    `problems` (list of (record id, reason, detail) for those skipped records).
    """

    def __init__(self, items: Iterable[Example] = (), *, source: str = "", split: str = "") -> None:
        super().__init__(items)
        self.source, self.split = source, split
        self.filtered = 0
        self.skipped: Counter[str] = Counter()
        self.problems: list[tuple[str, str, str]] = []


class Prediction(NamedTuple):
    """A generated answer to score: the example, the generated text and, when it was not the task's inference
    prompt, the prompt text the model saw."""

    example: Example
    output: str
    prompt: str | None = None


def open_source(source: str | Path, split: str) -> tuple[Any, str, Path | None]:
    """Open one split of a dataset as a `datasets.Dataset` whose images are left undecoded.

    Args:
        source: a directory written by `save_to_disk` (a DatasetDict: `split` is taken from it; a Dataset:
            taken whole); a directory of parquet files (those named `{split}-*.parquet`, `{split}.parquet`
            or under a `{split}/` folder); a .parquet, .json or .jsonl file (taken whole); else a hub id.
        split: the split name.
    Returns:
        (dataset, a description of the source for messages, the folder relative image paths resolve from).
    Errors:
        FileNotFoundError for a path that does not exist or a parquet folder without files for `split`;
        ValueError for a split missing from a DatasetDict or an unknown file type.
    """
    import datasets  # here, not at module level: importing the tasks must stay light and side-effect free

    path = Path(source).expanduser()
    where = f"{source} [{split}]"
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            data = datasets.load_from_disk(str(path))
            if isinstance(data, datasets.DatasetDict):
                if split not in data:
                    raise ValueError(f"{source}: no split {split!r} (has {sorted(data)})")
                data = data[split]
        else:
            files = [p for p in sorted(path.rglob("*.parquet")) if _is_split_file(p, path, split)]
            if not files:
                raise FileNotFoundError(f"{source}: no parquet files for split {split!r}")
            data = datasets.load_dataset("parquet", data_files=[str(p) for p in files], split="train")
        base_dir = path
    elif path.is_file():
        kinds = {".parquet": "parquet", ".json": "json", ".jsonl": "json"}
        if path.suffix not in kinds:
            raise ValueError(f"{source}: unsupported file type {path.suffix!r} (parquet, json, jsonl)")
        data = datasets.load_dataset(kinds[path.suffix], data_files=str(path), split="train")
        base_dir = path.parent
    elif str(source).startswith((".", "/", "~")):
        raise FileNotFoundError(f"{source}: no such file or directory")
    else:
        data = datasets.load_dataset(str(source), split=split)
        base_dir = None
    if isinstance(data.features.get("image"), datasets.Image):
        # Decode ourselves, record by record, so an unreadable image is reported with its record id.
        data = data.cast_column("image", datasets.Image(decode=False))
    return data, where, base_dir


def _is_split_file(file: Path, root: Path, split: str) -> bool:
    return file.name.startswith(f"{split}-") or file.stem == split or split in file.relative_to(root).parts[:-1]


def image_is_missing(value: Any) -> bool:
    """True for an absent image: None, "" or an image struct with neither bytes nor path."""
    if isinstance(value, Mapping):
        return not value.get("bytes") and not value.get("path")
    return value is None or value == ""


def decode_image(value: Any, base_dir: Path | None) -> Image.Image:
    """Open an image given as a PIL image, raw bytes, a path, or a `{"bytes", "path"}` struct.

    The header (and, for PNG, the checksums) is verified now; pixels are decoded lazily on first use, so a
    dataset's images are not all held decoded in memory.
    Errors: BadRecord(UNREADABLE_IMAGE) when the bytes or file cannot be read as an image.
    """
    if isinstance(value, Image.Image):
        return value
    try:
        if isinstance(value, Mapping):
            data, path = value.get("bytes"), value.get("path")
        else:
            data, path = (value, None) if isinstance(value, bytes) else (None, value)
        if not data:
            path = Path(path)
            data = (path if path.is_absolute() or base_dir is None else base_dir / path).read_bytes()
        Image.open(io.BytesIO(data)).verify()
        return Image.open(io.BytesIO(data))
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, struct.error...) for bad bytes
        raise BadRecord(UNREADABLE_IMAGE, f"{type(err).__name__}: {err}") from None


def require(row: Mapping[str, Any], name: str) -> Any:
    """The value of a required field. Errors: BadRecord(MISSING_FIELD) when absent or None."""
    value = row.get(name)
    if value is None:
        raise BadRecord(MISSING_FIELD, f"field {name!r} is missing")
    return value


def check_choices(choices: Any) -> list[str]:
    """Validate the option list. Errors: BadRecord(EMPTY_CHOICES or BAD_CHOICES)."""
    if not isinstance(choices, (list, tuple)):
        raise BadRecord(BAD_CHOICES, f"choices is a {type(choices).__name__}, not a list")
    if not choices:
        raise BadRecord(EMPTY_CHOICES, "choices is empty")
    if len(choices) > len(LETTERS) or not all(isinstance(c, str) for c in choices):
        raise BadRecord(BAD_CHOICES, f"choices must be 1-26 strings, got {choices!r}")
    return list(choices)
