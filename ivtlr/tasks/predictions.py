"""The predictions JSONL: writing it and reading it back with every line checked."""

from __future__ import annotations

import json

from collections.abc import Iterable, Mapping, Sequence

from pathlib import Path
from typing import Any
from ivtlr.tasks.examples import DataError, MISSING_FIELD


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
        DataError (source "<path>:<line>") for invalid JSON, a missing required field, a `messages` that is not a
        non-empty list ending in the output string, a `choices` that is not a non-empty list, a duplicate id (e.g.
        a file that a rerun appended to), or a file with no records.
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
            if "messages" in required:
                messages = record["messages"]
                if not isinstance(messages, list) or not messages:
                    raise DataError(where, record_id, "bad_field", "messages must be a non-empty list of strings "
                                    f"(prompt, output), got {type(messages).__name__} {str(messages)[:40]!r}")
                if not isinstance(messages[-1], str):
                    raise DataError(where, record_id, "bad_field", "the last of messages (the output) must be a string")
            if "choices" in required:
                choices = record["choices"]
                if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
                    raise DataError(where, record_id, "bad_field", "choices must be a non-empty list of option "
                                    f"strings, got {choices!r}"[:120])
            problem = _field_problem(record, required)
            if problem:
                raise DataError(where, record_id, "bad_field", problem)
            if record_id in seen:
                raise DataError(where, record_id, "duplicate_id", "the id occurs twice in the file")
            seen.add(record_id)
            records.append(record)
    if not records:
        raise DataError(str(path), "-", "empty_file", "the file holds no records")
    return records


def _field_problem(record: dict[str, Any], required: Sequence[str]) -> str | None:
    """What is wrong with a record's answer, group or category fields, or None (the types a judge can read)."""
    answer = record.get("answer")
    if "answer" in required and (isinstance(answer, bool) or not isinstance(answer, (str, int))):
        return f"answer must be an option letter or a 0-based index, got {answer!r}"
    for name in ("domain", "topic"):
        if name in required and isinstance(record.get(name), (list, dict)):
            return f"{name} must be a name, got {record[name]!r}"[:120]
    cats = record.get("categories")
    if "categories" in required and (not isinstance(cats, list) or not all(isinstance(c, str) for c in cats)):
        return f"categories must be a list of names, got {cats!r}"[:120]
    return None
