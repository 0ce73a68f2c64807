"""M3CoT (HF `LightChen2333/M3CoT`): multi-domain multimodal chain-of-thought multiple choice.

Columns: id, category, image_id, question, choices (2-5), context, answer (letter A-E), rationale, split,
image, domain (science / commonsense / mathematics), topic.

Prompts. "reference": the authors' training prompt `[Question]:{q}\\n[Options]:\\n(A).{c0}\\n...\\nAnswer:\\n`
and their different inference prompt (`A.{c0}` option lines, nothing after `Answer:`); neither shows the
`context` column (the spec is silent on it; the reference code never reads it). "aligned" (default): one prompt
for training and inference, the training form, with a non-empty context prepended as `[Context]:{context}\\n`.
Answer target: "Therefore, the answer is <letter>". Judges: "official" (M3CoT's `judge_answer` on the generated
text) and "reference" (the authors' lenient rule on prompt + output), reported overall, per domain and per topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image

from ivtlr.tasks.scoring import official_prediction, reference_candidates, reference_text
from ivtlr.tasks.base import Task
from ivtlr.tasks.examples import ANSWER_OUT_OF_RANGE, BadRecord, Example, LETTERS, check_choices, require


@dataclass
class M3CoTTask(Task):
    """The M3CoT benchmark (options: see `Task`; default: aligned prompt, image subset)."""

    name: ClassVar[str] = "m3cot"
    default_source: ClassVar[str | None] = "LightChen2333/M3CoT"
    judge_names: ClassVar[tuple[str, ...]] = ("official", "reference")
    record_fields: ClassVar[tuple[str, ...]] = ("id", "choices", "answer", "domain", "topic", "messages")
    reference_infer_format: ClassVar[dict[str, Any]] = {"option_style": "plain", "answer_newline": False}

    def example_from_row(self, row: Mapping[str, Any], record_id: str, image: Image.Image | None) -> Example:
        """Convert one M3CoT row. Errors: BadRecord (missing id/question/choices/answer, empty or bad choices,
        an answer that is not a letter of an existing option)."""
        require(row, "id")
        question = require(row, "question")
        choices = check_choices(require(row, "choices"))
        answer = str(require(row, "answer")).strip()
        if len(answer) != 1 or answer not in LETTERS[: len(choices)]:
            raise BadRecord(ANSWER_OUT_OF_RANGE, f"answer {answer!r} with {len(choices)} choices")
        return Example(
            id=record_id,
            question=question,
            choices=choices,
            answer_index=LETTERS.index(answer),
            rationale=row.get("rationale") or "",
            image=image,
            context=row.get("context") or "",
            domain=row.get("domain") or "",
            topic=row.get("topic") or "",
            extra={k: row.get(k) for k in ("category", "image_id", "split") if row.get(k) is not None},
        )

    def to_record(self, example: Example, output: str, prompt: str | None = None) -> dict[str, Any]:
        """M3CoT's "custom" predictions record; the prompt defaults to this task's inference prompt."""
        return {
            "id": example.id,
            "choices": example.choices,
            "answer": example.answer_letter,
            "domain": example.domain,
            "topic": example.topic,
            "messages": [self.prompt(example, "infer") if prompt is None else prompt, output],
        }

    def judge(self, record: Mapping[str, Any], judge: str) -> tuple[Any, bool]:
        """official: (predicted letter or "FAILED", verdict) on the generated text; reference: (sorted candidate
        letters, verdict) on prompt + generated text."""
        messages, answer = record["messages"], record["answer"]
        if isinstance(answer, int) and not 0 <= answer < len(record["choices"]):
            raise ValueError(f"record {record['id']!r}: answer index {answer} with {len(record['choices'])} options")
        gold = answer if isinstance(answer, str) else LETTERS[answer]  # other files may store an index
        if judge == "official":
            prediction = official_prediction(messages[-1], record["choices"])
            return prediction, prediction == gold
        prompt = messages[0] if len(messages) > 1 else ""
        candidates = reference_candidates(reference_text(prompt, messages[-1]))
        return sorted(candidates), gold.strip().upper() in candidates

    def groups(self, record: Mapping[str, Any]) -> dict[str, list[str]]:
        """Per domain and per topic; a topic is keyed "<domain>/<topic>" (topics are nested in domains)."""
        return {"domain": [record["domain"]], "topic": [f"{record['domain']}/{record['topic']}"]}
