"""What every benchmark task shares: the `Example` record, loading with a bad-record policy, rationale to
steps, the multiple-choice prompt, the predictions JSONL and the score report.

What it is not: a benchmark. `m3cot.py`, `scienceqa.py` and `synth.py` subclass `Task`; the judges live in
`scoring.py`. Nothing here runs at import: `datasets` is imported only when something is loaded.
"""

from __future__ import annotations

import io
import json
import logging
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

from PIL import Image

logger = logging.getLogger(__name__)

LETTERS = string.ascii_uppercase
ANSWER_PREFIX = "Therefore, the answer is "

# Reasons a record is rejected; the keys of `Examples.skipped`.
MISSING_FIELD = "missing_field"
EMPTY_CHOICES = "empty_choices"
BAD_CHOICES = "bad_choices"
ANSWER_OUT_OF_RANGE = "answer_out_of_range"
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"


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


# ----------------------------------------------------------------------------------------------------------
# Text helpers (the method's definitions, section 3-4 of the spec)


def rationale_to_steps(rationale: str) -> list[str]:
    """Split a rationale into at most 3 reasoning steps, as the reference training code does.

    Newlines become spaces, the text is stripped (the reference code strips; the spec's summary omits it),
    split on ". ", and a trailing empty piece is dropped. More than 3 pieces are merged into 3 contiguous
    chunks of sizes q+1 (the first r chunks) or q, (q, r) = divmod(len, 3), rejoined with ". ".

    Args:
        rationale: the annotated chain of thought (may be empty).
    Returns:
        0 to 3 step strings ([] for an empty or blank rationale).
    """
    pieces = rationale.replace("\n", " ").strip().split(". ")
    if pieces[-1] == "":
        pieces.pop()
    if len(pieces) <= 3:
        return pieces
    q, r = divmod(len(pieces), 3)
    steps, start = [], 0
    for i in range(3):
        end = start + q + (1 if i < r else 0)
        steps.append(". ".join(pieces[start:end]))
        start = end
    return steps


def step_target(step: str) -> str:
    """The text a reasoning step is trained as: the step followed by a newline."""
    return step + "\n"


def format_prompt(
    question: str,
    choices: Sequence[str],
    *,
    context: str = "",
    option_style: Literal["paren", "plain"] = "paren",
    answer_newline: bool = True,
) -> str:
    """The authors' multiple-choice user-turn text (the image is passed separately).

    `[Question]:{q}\\n[Options]:\\n(A).{c0}\\n(B).{c1}\\nAnswer:\\n` with literal braces, as in the reference
    code (f"{{{q}}}"); question and options are stripped. `option_style="plain"` writes `A.{c0}` lines;
    `answer_newline=False` ends at `Answer:`. A non-empty context is prepended as `[Context]:{context}\\n`
    (braces kept for symmetry with the question; the reference never shows a context).
    """
    head = f"[Context]:{{{context.strip()}}}\n" if context.strip() else ""
    if option_style == "paren":
        options = [f"({LETTERS[i]}).{{{c.strip()}}}" for i, c in enumerate(choices)]
    else:
        options = [f"{LETTERS[i]}.{{{c.strip()}}}" for i, c in enumerate(choices)]
    text = f"{head}[Question]:{{{question.strip()}}}\n[Options]:\n" + "\n".join(options) + "\nAnswer:"
    return text + "\n" if answer_newline else text


# ----------------------------------------------------------------------------------------------------------
# Loading


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


# ----------------------------------------------------------------------------------------------------------
# Predictions JSONL: M3CoT's "custom" format, one object per line with id, choices, answer, domain, topic and
# messages = [prompt text, generated text] (tasks may add fields, e.g. ScienceQA's categories)


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write records one JSON object per line (UTF-8, not ASCII-escaped). Overwrites: a rerun never appends
    to an old file. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | Path, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read a predictions JSONL, checking each record.

    Errors:
        DataError (source "<path>:<line>") for invalid JSON, a missing required field, an empty `messages`
        list or a duplicate id (e.g. a file that a rerun appended to).
    """
    records, seen = [], set()
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(where, f"line {lineno}", "invalid_json", str(err)) from None
            if not isinstance(record, dict):
                raise DataError(where, f"line {lineno}", "invalid_json", "a line must hold a JSON object")
            record_id = str(record.get("id", f"line {lineno}"))
            for name in required:
                if record.get(name) is None:
                    raise DataError(where, record_id, MISSING_FIELD, f"field {name!r} is missing")
            if "messages" in required and not record["messages"]:
                raise DataError(where, record_id, MISSING_FIELD, "messages is empty")
            if record_id in seen:
                raise DataError(where, record_id, "duplicate_id", "the id occurs twice in the file")
            seen.add(record_id)
            records.append(record)
    return records


# ----------------------------------------------------------------------------------------------------------
# Score report


@dataclass
class Tally:
    """Correct and total counts of one judge over one group."""

    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "correct": self.correct, "total": self.total}


@dataclass
class ScoreReport:
    """Accuracy of each judge, overall and per group, and the per-record verdicts.

    `overall`: judge -> Tally. `groups`: group name ("domain", "topic", "category") -> group key -> judge ->
    Tally. `verdicts`: one dict per record: id, answer, and judge -> {"prediction", "correct"}.
    """

    task: str
    judges: tuple[str, ...]
    overall: dict[str, Tally]
    groups: dict[str, dict[str, dict[str, Tally]]]
    verdicts: list[dict[str, Any]]

    def to_dict(self, verdicts: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; the per-record verdicts are included when `verdicts` is true."""
        out: dict[str, Any] = {
            "task": self.task,
            "judges": list(self.judges),
            "overall": {j: t.to_dict() for j, t in self.overall.items()},
            "groups": {
                g: {k: {j: t.to_dict() for j, t in by_judge.items()} for k, by_judge in keys.items()}
                for g, keys in self.groups.items()
            },
        }
        if verdicts:
            out["verdicts"] = self.verdicts
        return out

    def format(self, verdicts: bool = False) -> str:
        """A plain-text table: one row per group key, one column per judge, accuracy in percent."""
        rows = [("all", self.overall)]
        for group, keys in self.groups.items():
            rows += [(f"{group} {key}", keys[key]) for key in sorted(keys)]
        width = max(len(name) for name, _ in rows)
        lines = [f"{self.task}: {next(iter(self.overall.values())).total} predictions"]
        lines.append(" " * width + "".join(f"  {j:>22}" for j in self.judges))
        for name, by_judge in rows:
            cells = "".join(
                f"  {f'{100 * t.accuracy:.2f} ({t.correct}/{t.total})':>22}" for t in by_judge.values()
            )
            lines.append(f"{name:<{width}}{cells}")
        if verdicts:
            for v in self.verdicts:
                marks = " ".join(
                    f"{j}={v[j]['prediction']}:{'ok' if v[j]['correct'] else 'wrong'}" for j in self.judges
                )
                lines.append(f"{v['id']}\tanswer={v['answer']}\t{marks}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# The task


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
            out of range, missing image under images="require", unreadable image); see `open_source` for
            source errors.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        source = self.default_source if source is None else source
        if source is None:
            raise ValueError(f"task {self.name!r} has no default source: pass the dataset directory")
        data, where, base_dir = open_source(source, split)
        out = Examples(source=where, split=split)
        for index, row in enumerate(data):
            record_id = self.record_id(row, index, split)
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
