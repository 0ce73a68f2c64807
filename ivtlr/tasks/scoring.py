"""The judges that turn a generated text into a verdict, and `ivtlr score` over a predictions JSONL.

Judges (pure functions of text):
- `official_prediction` / `judge_answer`: M3CoT's official judge (LightChen233/M3CoT utils/metric.py),
  re-implemented from its documented behaviour, traps included (see the spec, section 5).
- `reference_candidates` / `reference_judge`: the IVT-LR authors' lenient M3CoT rule.
- `sqa_prediction`: the IVT-LR authors' ScienceQA answer extraction (digit first, then letter).

Predictions files are M3CoT's "custom" JSONL (see `base.read_jsonl` / `base.write_jsonl`).
What it is not: the per-benchmark glue (which judge reads which field): that is each Task's `judge`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from ivtlr.tasks.examples import LETTERS


# The official judge knows six option letters (its ALPHA_MAP).
OFFICIAL_LETTERS = "ABCDEF"
FAILED = "FAILED"

_PAREN_LETTER = re.compile(r"\(([A-Za-z])\)")
_PUNCTUATION = re.compile(r"[\n.,!?]")
# The reference decodes prompt + output with the chat template's role words left in: "Answer:\nassistant\n...".
_ASSISTANT_AFTER_ANSWER = re.compile(r"(?<=answer:)\s*assistant\b", re.IGNORECASE)
_ANSWER_LETTER = re.compile(r"(?:the\s+answer\s+is|Answer:)\s*[\n\s]*([A-Z])", re.IGNORECASE)
_SQA_DIGIT = [r"Therefore,?\s*the\s+answer\s+is\s+(\d)", r"the\s+answer\s+is\s+(\d)", r"answer\s+is:?\s*(\d)"]
_SQA_LETTER = [r"Therefore,?\s*the\s+answer\s+is\s+([A-Z])", r"the\s+answer\s+is\s+([A-Z])", r"answer\s+is:?\s*([A-Z])"]


def official_prediction(text: str, choices: Sequence[str], letters: str = OFFICIAL_LETTERS) -> str:
    """M3CoT's official prediction for a generated text (the generated text only, not the prompt).

    In order: (0) if "[Answer]" occurs, keep what follows its last occurrence, cut at "[Rationale]" and
    "[Context]"; (1) the LAST "(X)" match, uppercased; (2) else the HIGHEST-index choice whose lowercased text
    is a substring of the lowercased text (an empty choice text matches everything, as in the original);
    (3) else, with \\n . , ! ? replaced by spaces and the text split on single spaces, the highest letter
    among the first len(choices) of A-F found as a token; (4) the same with lowercase letters; (5) "FAILED".
    ``letters`` replaces A-F in steps (3)-(4): M3CoT's judge is the default; ``LETTERS`` (A-Z) reads every option
    letter a question can have (the synthetic benchmark's 9-option questions).

    Returns:
        The predicted letter, or "FAILED".
    """
    if "[Answer]" in text:
        text = text.split("[Answer]")[-1].split("[Rationale]")[0].split("[Context]")[0]
    parens = _PAREN_LETTER.findall(text)
    if parens:
        return parens[-1].upper()
    lowered = text.lower()
    hits = [LETTERS[i] for i, choice in enumerate(choices) if choice.lower() in lowered]
    if hits:
        return hits[-1]
    tokens = _PUNCTUATION.sub(" ", text).split(" ")
    letters = letters[: len(choices)]
    for case in (str.upper, str.lower):
        hits = [letter for letter in letters if case(letter) in tokens]
        if hits:
            return hits[-1]
    return FAILED


def judge_answer(text: str, choices: Sequence[str], answer: str | int) -> bool:
    """M3CoT's official verdict: the official prediction equals the gold letter (an int answer is an index)."""
    if isinstance(answer, int):
        answer = OFFICIAL_LETTERS[answer]
    return official_prediction(text, choices) == answer


def reference_candidates(text: str) -> set[str]:
    """The letters the IVT-LR authors' rule reads: every letter following "the answer is" or "Answer:"
    (case-insensitive, after deleting an "assistant" word right after "answer:"), uppercased.

    Args:
        text: prompt + output, as the reference decodes it (see `reference_text`).
    """
    cleaned = _ASSISTANT_AFTER_ANSWER.sub("", text)
    return {m.group(1).upper() for m in _ANSWER_LETTER.finditer(cleaned)}


def reference_text(prompt: str, output: str) -> str:
    """What the reference judge reads: the prompt and the generated text, one newline apart (the reference
    decodes the whole sequence; its "assistant" role word is deleted by the rule itself)."""
    return f"{prompt}\n{output}"


def reference_judge(text: str, answer: str) -> bool:
    """The authors' lenient verdict: the gold letter is among `reference_candidates(text)`."""
    return answer.strip().upper() in reference_candidates(text)


def sqa_prediction(text: str) -> int:
    """The IVT-LR authors' ScienceQA extraction from the generated text: the first of three digit patterns
    that matches ("Therefore, the answer is 0", "the answer is 0", "answer is: 0"), else the same three with
    a letter (mapped to its index), else -1. Case-insensitive."""
    for pattern in _SQA_DIGIT:
        match = re.search(pattern, text, re.IGNORECASE)
        if match:
            return int(match.group(1))
    for pattern in _SQA_LETTER:
        match = re.search(pattern, text, re.IGNORECASE)
        if match:
            return ord(match.group(1).upper()) - ord("A")
    return -1


# ----------------------------------------------------------------------------------------------------------
# Scoring a predictions file
