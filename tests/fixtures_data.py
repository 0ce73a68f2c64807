"""Tiny, schema-exact M3CoT and ScienceQA fixture datasets, written to a temporary folder in each supported
format (save_to_disk DatasetDict or Dataset, parquet file or folder, JSON lines). No network.

The features mirror the hub datasets' columns and types (`datasets.Features`), so a loader that works here
sees what it will see on the real data.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import datasets
from datasets import Features, Image, List, Value
from PIL import Image as PILImage

FORMATS = ("disk", "disk_single", "parquet_file", "parquet_dir", "jsonl")


def m3cot_features() -> Features:
    """M3CoT's columns: id, category, image_id, question, choices, context, answer (letter), rationale, split,
    image, domain, topic."""
    text = Value("string")
    return Features({
        "id": text, "category": text, "image_id": text, "question": text, "choices": List(text),
        "context": text, "answer": text, "rationale": text, "split": text, "image": Image(),
        "domain": text, "topic": text,
    })


def scienceqa_features() -> Features:
    """ScienceQA's columns: image, question, choices, answer (int8, 0-based), hint, task, grade, subject,
    topic, category, skill, lecture, solution."""
    text = Value("string")
    return Features({
        "image": Image(), "question": text, "choices": List(text), "answer": Value("int8"), "hint": text,
        "task": text, "grade": text, "subject": text, "topic": text, "category": text, "skill": text,
        "lecture": text, "solution": text,
    })


def png_bytes(color: str = "red", size: tuple[int, int] = (8, 8)) -> bytes:
    """A small PNG image's bytes."""
    buf = io.BytesIO()
    PILImage.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def image(color: str) -> dict[str, Any]:
    """An image cell as `datasets.Image` stores it."""
    return {"bytes": png_bytes(color), "path": None}


def m3cot_row(id: str, **fields: Any) -> dict[str, Any]:
    """One M3CoT row with defaults (2 choices, answer A, empty context, a red image); `fields` override."""
    row = {
        "id": id, "category": "cat", "image_id": f"img-{id}", "question": f"Question {id}?",
        "choices": ["yes", "no"], "context": "", "answer": "A", "rationale": "Because. So A.", "split": "test",
        "image": image("red"), "domain": "science", "topic": "physics",
    }
    row.update(fields)
    return row


def m3cot_rows() -> list[dict[str, Any]]:
    """Four rows: 2 and 5 choices, empty and non-empty context, one without an image, a multi-line rationale."""
    return [
        m3cot_row("m1", rationale="First. Second. Third. Fourth."),
        m3cot_row(
            "m2", choices=["red", "green", "blue", "cyan", "pink"], answer="E", context="A lab.",
            image=image("blue"), domain="commonsense", topic="social",
            rationale="One.\nTwo. Three. Four. Five. Six. Seven.",
        ),
        m3cot_row("m3", choices=["1", "2", "3"], answer="C", image=None, domain="mathematics", topic="algebra"),
        m3cot_row("m4", choices=["a", "b", "c", "d"], answer="B", image=image("green"), topic="biology"),
    ]


def scienceqa_row(**fields: Any) -> dict[str, Any]:
    """One ScienceQA row with defaults (2 choices, answer 0, no hint, an image, grade 3); `fields` override."""
    row = {
        "image": image("red"), "question": "Which is a mammal?", "choices": ["whale", "shark"], "answer": 0,
        "hint": "", "task": "closed choice", "grade": "grade3", "subject": "natural science",
        "topic": "biology", "category": "Classify", "skill": "Identify mammals",
        "lecture": "Mammals have hair.", "solution": "A whale is a mammal.",
    }
    row.update(fields)
    return row


def scienceqa_rows() -> list[dict[str, Any]]:
    """Five rows: with and without image and hint, empty lecture, empty lecture and solution, grades 1-12."""
    return [
        scienceqa_row(answer=1, choices=["rock", "cat"]),
        scienceqa_row(image=None, hint="Read the text.", grade="grade8", subject="language science",
                      choices=["x", "y", "z"], lecture="", solution="Only a solution."),
        scienceqa_row(hint="Look at the map.", grade="grade10", subject="social science", topic="geography",
                      choices=["N", "S", "E", "W"], answer=3, lecture="", solution="West is left."),
        scienceqa_row(grade="grade1", choices=["1", "2", "3", "4", "5"], answer=4, lecture="", solution=""),
        scienceqa_row(image=None, grade="grade12", lecture="Only a lecture.", solution=""),
    ]


def _jsonl_cell(value: Any, name: str, folder: Path) -> Any:
    # JSON cannot hold bytes: an image becomes a PNG file referenced by a path relative to the .jsonl file.
    if isinstance(value, dict) and value.get("bytes") is not None:
        (folder / "images").mkdir(exist_ok=True)
        (folder / "images" / name).write_bytes(value["bytes"])
        return f"images/{name}"
    return value


def write_dataset(
    folder: Path, features: Features, splits: dict[str, list[dict[str, Any]]], fmt: str
) -> Path:
    """Write `splits` (split -> rows) under `folder` in format `fmt` (one of FORMATS); returns the source
    path to load from. Single-file formats ("disk_single", "parquet_file", "jsonl") hold the first split."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = {name: datasets.Dataset.from_list(rows, features=features) for name, rows in splits.items()}
    first = next(iter(splits))
    if fmt == "disk":
        datasets.DatasetDict(tables).save_to_disk(str(folder / "dd"))
        return folder / "dd"
    if fmt == "disk_single":
        tables[first].save_to_disk(str(folder / "single"))
        return folder / "single"
    if fmt == "parquet_file":
        tables[first].to_parquet(str(folder / f"{first}.parquet"))
        return folder / f"{first}.parquet"
    if fmt == "parquet_dir":
        # The hub's layout: data/<split>-00000-of-00001.parquet
        for name, table in tables.items():
            table.to_parquet(str(folder / "pq" / "data" / f"{name}-00000-of-00001.parquet"))
        return folder / "pq"
    if fmt == "jsonl":
        path = folder / f"{first}.jsonl"
        with path.open("w") as f:
            for i, row in enumerate(splits[first]):
                cells = {k: _jsonl_cell(v, f"{first}-{i}.png", folder) for k, v in row.items()}
                f.write(json.dumps(cells) + "\n")
        return path
    raise ValueError(f"unknown format {fmt!r}")
