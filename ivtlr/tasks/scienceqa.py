"""ScienceQA (HF `derek-thomas/ScienceQA`): grade-school science multiple choice, image subset by default.

Columns: image (or None), question, choices, answer (int, 0-based), hint, task, grade ("grade1".."grade12"),
subject, topic, category, skill, lecture, solution. The HF copy has no id column: a record's id is its row
index within the split, "<split>-<index>" (counted before the image filter, as the reference does).

Rationale: lecture + " " + solution (each stripped); only one of them when the other is empty; both empty ->
empty rationale, zero steps (the reference falls back to the answer digit instead). Prompts as M3CoT's, with the
hint as context in "aligned" mode; the reference inference prompt keeps the `(A).{c}` option lines and ends at
`Answer:`. Answer target: the 0-based digit (answer_format="index", what the authors trained) or the letter.
Judge "reference": the authors' answer extraction (`sqa_prediction`). Accuracy per official category: NAT/SOC/LAN
(subject), TXT (hint non-empty), IMG (has image), NO (neither), G1-6 / G7-12 (grade).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from PIL import Image

from ivtlr.tasks.scoring import sqa_prediction
from ivtlr.tasks.base import Task
from ivtlr.tasks.examples import ANSWER_OUT_OF_RANGE, BadRecord, Example, check_choices, require

SUBJECT_CATEGORIES = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}


def sqa_rationale(lecture: str | None, solution: str | None) -> str:
    """lecture + " " + solution, stripped; whichever is non-empty when one is empty; "" when both are."""
    return " ".join(part.strip() for part in (lecture or "", solution or "") if part.strip())


def sqa_categories(example: Example) -> list[str]:
    """The official ScienceQA categories an example counts under, in the order NAT SOC LAN TXT IMG NO G1-6 G7-12.

    Subject -> NAT/SOC/LAN; TXT when the hint is non-empty, IMG when there is an image, NO when neither (so a
    record can be both TXT and IMG); grade1-6 -> G1-6, grade7-12 -> G7-12. Unknown subjects/grades add nothing.
    """
    found = []
    if example.extra.get("subject") in SUBJECT_CATEGORIES:
        found.append(SUBJECT_CATEGORIES[example.extra["subject"]])
    has_text, has_image = bool(example.context), example.image is not None
    found += ["TXT"] * has_text + ["IMG"] * has_image + ["NO"] * (not has_text and not has_image)
    grade = str(example.extra.get("grade", "")).removeprefix("grade")
    if grade.isdigit() and 1 <= int(grade) <= 12:
        found.append("G1-6" if int(grade) <= 6 else "G7-12")
    return found


@dataclass
class ScienceQATask(Task):
    """The ScienceQA benchmark. Options: those of `Task`, plus `answer_format`: "index" (default: "Therefore,
    the answer is 0", as the authors trained) or "letter" ("Therefore, the answer is A")."""

    answer_format: Literal["index", "letter"] = "index"

    name: ClassVar[str] = "scienceqa"
    default_source: ClassVar[str | None] = "derek-thomas/ScienceQA"
    judge_names: ClassVar[tuple[str, ...]] = ("reference",)
    record_fields: ClassVar[tuple[str, ...]] = ("id", "choices", "answer", "categories", "messages")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.answer_format not in ("index", "letter"):
            raise ValueError(f"answer_format must be 'index' or 'letter', got {self.answer_format!r}")

    def record_id(self, row: Mapping[str, Any], index: int, split: str) -> str:
        """The row's `id` if it has one, else "<split>-<row index>"."""
        value = row.get("id")
        return f"{split}-{index}" if value is None or value == "" else str(value)

    def example_from_row(self, row: Mapping[str, Any], record_id: str, image: Image.Image | None) -> Example:
        """Convert one ScienceQA row. Errors: BadRecord (missing question/choices/answer, empty or bad
        choices, an answer that is not an index of an option)."""
        question = require(row, "question")
        choices = check_choices(require(row, "choices"))
        answer = require(row, "answer")
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise BadRecord(ANSWER_OUT_OF_RANGE, f"answer {answer!r} with {len(choices)} choices")
        return Example(
            id=record_id,
            question=question,
            choices=choices,
            answer_index=answer,
            rationale=sqa_rationale(row.get("lecture"), row.get("solution")),
            image=image,
            context=row.get("hint") or "",
            domain=row.get("subject") or "",
            topic=row.get("topic") or "",
            extra={k: row.get(k) for k in ("grade", "subject", "category", "skill", "task") if row.get(k) is not None},
        )

    def answer_token(self, example: Example) -> str:
        return str(example.answer_index) if self.answer_format == "index" else example.answer_letter

    def to_record(self, example: Example, output: str, prompt: str | None = None) -> dict[str, Any]:
        """The predictions record: M3CoT's custom fields (answer as the 0-based index, domain = subject) plus
        the example's official categories."""
        return {
            "id": example.id,
            "choices": example.choices,
            "answer": example.answer_index,
            "domain": example.domain,
            "topic": example.topic,
            "categories": sqa_categories(example),
            "messages": [self.prompt(example, "infer") if prompt is None else prompt, output],
        }

    def judge(self, record: Mapping[str, Any], judge: str) -> tuple[Any, bool]:
        """reference: (predicted index or -1, verdict) from the generated text. Errors: ValueError for a gold
        answer that is not a 0-based index of an option (e.g. a letter: it would never match)."""
        answer = record["answer"]
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(record["choices"]):
            hint = (f" (ScienceQA gives the answer as a 0-based index: for {answer!r} write "
                    f"{ord(answer) - 65})" if isinstance(answer, str) and len(answer) == 1 and answer.isupper() else "")
            raise ValueError(f"record {record['id']!r}: answer {answer!r} is not the index of one of its "
                             f"{len(record['choices'])} options{hint}")
        prediction = sqa_prediction(record["messages"][-1])
        return prediction, prediction == record["answer"]

    def groups(self, record: Mapping[str, Any]) -> dict[str, list[str]]:
        """Per official category (a record counts under several)."""
        return {"category": list(record["categories"])}
