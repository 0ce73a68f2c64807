"""What the model looked at while it reasoned in the dark: answers with each latent step's selected patches.

``answer(inf, questions)`` runs a batch of free-form questions (image, question, options) through the one
inference path and returns, per question, the answer, the autoregressive steps, the time, and the patches each
latent step inserted, both as token cells and as pixel boxes in the original image (the prompt encoder maps
tokens back through its resize: Qwen2-VL's merged 28 px tokens, Chameleon's VQ grid over its centre crop).
``card`` draws one answer (the image with the patches overlaid, one colour per step, the rank in each box),
``write_gallery`` writes a PNG per answer and one self-contained HTML page. ``ivtlr infer``, ``ivtlr explain``
and ``ivtlr serve`` all use them.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from .batching import collate
from .curriculum import EncodedExample, inference_sample
from .inference import Inference
from .tasks import Example
from .tasks.examples import LETTERS

#: one colour per latent step (colour-blind-safe palette), cycled beyond eight steps
STEP_COLOURS = ("#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#000000")


@dataclass
class Question:
    image: Image.Image
    question: str
    choices: list[str]
    id: str = ""
    answer: str | None = None  # the gold option letter, when known

    def __post_init__(self):
        name = f"question {self.id!r}" if self.id else "the question"
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"{name}: the question text is empty")
        if (not isinstance(self.choices, (list, tuple)) or not 2 <= len(self.choices) <= 26
                or not all(isinstance(c, str) and c.strip() for c in self.choices)):
            raise ValueError(f"{name}: choices must be a list of 2 to 26 non-empty option strings (letters A-Z), "
                             f"got {str(self.choices)[:80]}")
        self.choices = list(self.choices)


@dataclass
class Answer:
    question: Question
    output: str  # the generated text
    prediction: str  # the option letter it names under the task's headline judge ("FAILED" if none)
    ar_steps: int
    seconds: float  # the batch's wall time divided by its size
    grid: tuple[int, int]  # image tokens (rows, cols)
    selected: list[list[int]]  # per latent step: token offsets in insertion order (rank 1 first)
    boxes: list[list[tuple[float, float, float, float]]] = field(default_factory=list)  # the same as pixel boxes

    @property
    def cells(self) -> list[list[tuple[int, int]]]:
        cols = self.grid[1]
        return [[(o // cols, o % cols) for o in step] for step in self.selected]

    def to_dict(self) -> dict:
        return {"id": self.question.id, "question": self.question.question, "choices": self.question.choices,
                "output": self.output, "prediction": self.prediction, "answer": self.question.answer,
                "ar_steps": self.ar_steps, "seconds": self.seconds, "grid": list(self.grid),
                "selected_cells": [[list(c) for c in step] for step in self.cells],
                "selected_boxes": [[[round(v, 1) for v in box] for box in step] for step in self.boxes]}


def answer(inf: Inference, questions: list[Question], n_latents: int | None = None,
           max_new_tokens: int = 32) -> list[Answer]:
    """Answer ``questions`` in one engine batch. Raises ValueError naming the question for an image the backbone
    cannot take, or more image tokens to select (K x n) than the image has."""
    examples = [Example(id=q.id or str(i), question=q.question, choices=list(q.choices), answer_index=0,
                        image=q.image) for i, q in enumerate(questions)]
    prompts = [(ex.id, inf.task.prompt(ex, "infer"), ex.image) for ex in examples]
    out = []
    for q, ex, gen in zip(questions, examples, generate_prompts(inf, prompts, n_latents, max_new_tokens)):
        boxes = inf.encoder.token_boxes(q.image.size, gen.grid)
        out.append(Answer(q, gen.text, predicted_letter(inf.task, ex, gen.text), gen.ar_steps, gen.seconds, gen.grid,
                          gen.selected, [[boxes[o] for o in step] for step in gen.selected]))
    return out


@dataclass
class Generated:
    text: str
    ar_steps: int
    seconds: float  # the batch's wall time divided by its size
    grid: tuple[int, int]
    selected: list[list[int]]


def generate_prompts(inf: Inference, prompts: list[tuple[str, str, Image.Image]], n_latents: int | None = None,
                     max_new_tokens: int = 32) -> list[Generated]:
    """Latent generation for ready-made prompts ``(id, user-turn text, image)`` in one engine batch (what
    ``answer`` and the lmms-eval model run). ``n_latents`` defaults to the run's last stage."""
    n = inf.config.curriculum.max_latent_stage if n_latents is None else n_latents
    tokens, backbone = inf.tokens, inf.engine.backbone
    samples, grids = [], []
    for pid, text, image in prompts:
        ids, vision = inf.encoder.encode_prompt(text, image)
        enc = EncodedExample(pid, ids, ids, vision, [], [], sum(1 for i in ids if i == tokens.image))
        samples.append(inference_sample(enc, n, tokens.latent))
        grids.append(backbone.image_grids(vision)[0])
    batch = collate(samples, tokens.pad).to(backbone.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        gen = inf.engine.generate(batch, max_new_tokens)
    seconds = (time.perf_counter() - t0) / len(prompts)
    return [Generated(inf.encoder.decode(gen.sequences[b, :gen.num_generated[b]].tolist()), gen.num_generated[b],
                      seconds, grids[b], gen.selected[b]) for b in range(len(prompts))]


def open_image(path: str | Path, name: str = "") -> Image.Image:
    """An image file, decoded now; ValueError naming the file (and ``name``) if it is missing or unreadable."""
    try:
        image = Image.open(path)
        image.load()
        return image
    except Exception as err:  # noqa: BLE001  (Pillow raises OSError, ValueError, SyntaxError, ... on bad bytes)
        raise ValueError(f"{name + ': ' if name else ''}cannot read image {path}: "
                         f"{getattr(err, 'strerror', None) or err}") from None


def predicted_letter(task, example: Example, output: str) -> str:
    """The option letter ``output`` names under the task's headline judge (what its accuracy counts)."""
    prediction, _ = task.judge(task.to_record(example, output), task.judge_names[0])
    if isinstance(prediction, int):  # ScienceQA's judge reads an option index (-1: none)
        return LETTERS[prediction] if 0 <= prediction < len(example.choices) else "FAILED"
    return prediction if isinstance(prediction, str) else ",".join(prediction) or "FAILED"


# ------------------------------------------------------------------------------------------------ drawing
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def overlay(image: Image.Image, boxes: list[list[tuple[float, float, float, float]]], side: int = 336) -> Image.Image:
    """The image scaled to ``side`` px on its long edge, each latent step's boxes outlined in its colour, the rank
    (1 = the highest attention) written in the box's corner."""
    image = image.convert("RGB")
    scale = side / max(image.size)
    big = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.NEAREST)
    draw = ImageDraw.Draw(big)
    font = _font(max(10, side // 28))
    for t, step in enumerate(boxes):
        colour = STEP_COLOURS[t % len(STEP_COLOURS)]
        inset = 1 + 2 * t  # steps that pick the same patch stay visible, nested
        for rank, (x0, y0, x1, y1) in enumerate(step, 1):
            box = [x0 * scale + inset, y0 * scale + inset, x1 * scale - inset - 1, y1 * scale - inset - 1]
            draw.rectangle(box, outline=colour, width=3)
            draw.text((box[0] + 3, box[1] + 1), f"{t + 1}.{rank}", fill=colour, font=font,
                      stroke_width=2, stroke_fill="white")
    return big


def card(ans: Answer, side: int = 336) -> Image.Image:
    """One answer as a picture: the overlay, and beside it the question, the options, the answer, the legend."""
    pic = overlay(ans.question.image, ans.boxes, side)
    font, small = _font(15), _font(13)
    lines = [(ans.question.question, font)]
    lines += [(f"({chr(65 + i)}) {c}", small) for i, c in enumerate(ans.question.choices)]
    verdict = "" if ans.question.answer is None else ("  (right)" if ans.prediction == ans.question.answer else
                                                        f"  (wrong; gold: {ans.question.answer})")
    lines += [("", small), (f"answer: {ans.prediction or '-'}{verdict}", font),
              (f"generated: {ans.output.strip()[:80]!r}", small),
              (f"{ans.ar_steps} autoregressive steps, {1000 * ans.seconds:.0f} ms", small), ("", small)]
    lines += [(f"step {t + 1}: cells {', '.join(f'({r},{c})' for r, c in cells)}", small)
              for t, cells in enumerate(ans.cells)]
    rows = []  # (text, font, colour), wrapped
    for text, f in lines:
        colour = "black"
        if text.startswith("step ") and ": cells" in text:
            colour = STEP_COLOURS[(int(text.split()[1].rstrip(":")) - 1) % len(STEP_COLOURS)]
        rows += [(part, f, colour) for part in (textwrap.wrap(text, 56) or [""])]
    out = Image.new("RGB", (pic.width + 460, max(pic.height, 20 + 20 * len(rows))), "white")
    out.paste(pic, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, (text, f, colour) in enumerate(rows):
        draw.text((pic.width + 14, 10 + 20 * i), text, fill=colour, font=f)
    return out


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_gallery(answers: list[Answer], out: str | Path, title: str = "IVT-LR: what each latent step looked at") -> Path:
    """``out/<id>.png`` per answer and ``out/index.html``: one page with every card embedded (opens offline)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for i, ans in enumerate(answers):
        name = f"{i:04d}-{_safe(ans.question.id or str(i))}.png"
        data = png_bytes(card(ans))
        (out / name).write_bytes(data)
        items.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
                     f'{base64.b64encode(data).decode()}"><figcaption>{html.escape(ans.question.id or name)}'
                     f"</figcaption></figure>")
    right = [a for a in answers if a.question.answer is not None]
    score = (f"<p>{sum(a.prediction == a.question.answer for a in right)} of {len(right)} right.</p>"
             if right else "")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:1.5em} figure{margin:0 0 1.5em} img{max-width:100%;"
            "border:1px solid #ddd} figcaption{color:#666;font-size:.9em}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Boxes: the image patches each latent step inserted, one colour per step; "
            "the label is step.rank (rank 1 had the most attention).</p>" + score + "".join(items) + "</body></html>")
    (out / "index.html").write_text(page)
    return out / "index.html"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:60]
