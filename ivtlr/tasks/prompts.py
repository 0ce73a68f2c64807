"""The method's text definitions: rationale to steps, a step's training target, the multiple-choice prompt."""

from __future__ import annotations

from collections.abc import Sequence

from typing import Literal
from ivtlr.tasks.examples import LETTERS

ANSWER_PREFIX = "Therefore, the answer is "


def rationale_to_steps(rationale: str, max_steps: int | None = 3) -> list[str]:
    """Split a rationale into at most 3 reasoning steps, as the reference training code does.

    Newlines become spaces, the text is stripped (the reference code strips; the spec's summary omits it),
    split on ". ", and a trailing empty piece is dropped. More than 3 pieces are merged into 3 contiguous
    chunks of sizes q+1 (the first r chunks) or q, (q, r) = divmod(len, 3), rejoined with ". ".

    Args:
        rationale: the annotated chain of thought (may be empty).
        max_steps: the merge's limit (3, the reference code's); None keeps every sentence as its own step (a
            benchmark whose sentences are its reasoning steps, e.g. the synthetic one with ``step_per_read``).
    Returns:
        0 to ``max_steps`` step strings ([] for an empty or blank rationale).
    """
    pieces = rationale.replace("\n", " ").strip().split(". ")
    if pieces[-1] == "":
        pieces.pop()
    if max_steps is None or len(pieces) <= max_steps:
        return pieces
    q, r = divmod(len(pieces), max_steps)
    steps, start = [], 0
    for i in range(max_steps):
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
