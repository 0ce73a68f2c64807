"""The rendered examples of docs/synthetic-task.md (``python -m ivtlr.data.synth update-docs``)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from .config import DOMAIN, LETTERS, SynthConfig
from .examples import make_example
from .render import render


DOC_EXAMPLES: tuple[tuple[str, dict], ...] = (
    ("dot-colour", {}),
    ("dot-count", {}),
    ("dot-match", {}),
    ("dot-colour", {"hops": 4}),
    ("arrow-colour", {"family": "arrows"}),
    ("arrow-direction", {"family": "arrows"}),
    ("colour-count", {"family": "arrows"}),
    ("arrow-colour", {"family": "arrows", "grid": 4, "hops": 3}),
)
_DOC_BEGIN, _DOC_END = "<!-- examples:begin -->", "<!-- examples:end -->"


def render_examples(img_dir: str | Path, seed: int = 0, scale: int = 4) -> str:
    """Write docs/img/synth-{1..8}.png (scaled up ``scale`` times) and return their markdown (links to img/...)."""
    img_dir = Path(img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for k, (kind, knobs) in enumerate(DOC_EXAMPLES, start=1):
        cfg = SynthConfig(**knobs)
        ex = make_example(cfg, seed, "docs", k, kind=kind)
        img = render(ex.scene, cfg.cell, cfg.palette_rgb, cfg.dot_style)
        img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(img_dir / f"synth-{k}.png")
        options = "  ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(ex.choices))
        parts.append(
            f"### Example {k}: {cfg.family} `{kind}` ({DOMAIN[kind]}), {cfg.grid}x{cfg.grid} grid, {cfg.hops} hops\n\n"
            f"![example {k}](img/synth-{k}.png)\n\n"
            f"- question: {ex.question}\n- choices: {options}\n- rationale: {ex.rationale}\n- answer: {ex.answer}\n")
    return "\n".join(parts)


def update_docs(doc_path: str | Path = "docs/synthetic-task.md") -> None:
    """Re-render the examples next to ``doc_path`` (img/) and rewrite the block between the example markers."""
    doc = Path(doc_path)
    text = doc.read_text()
    if _DOC_BEGIN not in text or _DOC_END not in text:
        raise ValueError(f"{doc} lacks the markers {_DOC_BEGIN} ... {_DOC_END}")
    block = render_examples(doc.parent / "img")
    head, rest = text.split(_DOC_BEGIN, 1)
    _, tail = rest.split(_DOC_END, 1)
    doc.write_text(f"{head}{_DOC_BEGIN}\n{block}{_DOC_END}{tail}")


def doc_block(doc_path: str | Path) -> str:
    """The examples block currently in ``doc_path`` (what ``render_examples`` must return to be in sync)."""
    text = Path(doc_path).read_text()
    return text.split(_DOC_BEGIN, 1)[1].split(_DOC_END, 1)[0].removeprefix("\n")
