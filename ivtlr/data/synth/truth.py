"""Ground truth read back from a record's image: the cells each rationale step reads (``ivtlr analyze``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from PIL import Image

from .config import ARROW_RGB, DOT_PALETTES, PALETTE, START_COLOUR, START_RGB
from .scene import Scene, solve


@dataclass(frozen=True)
class StepTruth:
    """What each rationale step of one question reads, recovered from its image and category alone.

    ``path``: the chain's cells, start first (row-major cell indices of the board). ``cells``: per rationale step
    (3), the cells it reads (step 1: the start; step 2: the cells on the way; step 3: the reached cell, plus the
    twin for dot-match); with per-read steps, one step per chain cell. ``content``: per step, the content it reads
    that the next step needs (dots: the dot colour of the last chain cell it reads; arrows: the start's arrow, then
    the colours of the cells reached).
    ``answer``: the answer's content. ``grid``: cells per side.
    """

    grid: int
    path: tuple[int, ...]
    cells: tuple[tuple[int, ...], ...]
    content: tuple[str, ...]
    answer: str


_CATEGORY = re.compile(r"^(dots|arrows)-grid(\d+)-hops(\d+)$")


def read_scene(image: Image.Image, grid: int, family: str = "dots") -> Scene:
    """The board drawn by ``render``, read back from its pixels. Dots: a cell's fill from the pixel next to its
    border, its dot from the centre pixel. Arrows: a cell's colour from a corner pixel, its arrow from the ink
    balance (the head half of an arrow holds about twice the black of the tail half).

    Raises ValueError when a pixel is not one of the family's colours (not an image of this benchmark)."""
    px = image.convert("RGB").load()
    cell = image.width // grid
    palettes = list(DOT_PALETTES.values()) if family == "dots" else [PALETTE]
    names = {rgb: name for palette in palettes for name, rgb in palette.items()} | {START_RGB: START_COLOUR}

    def name(x: int, y: int) -> str:
        if px[x, y] not in names:
            raise ValueError(f"pixel ({x}, {y}) has colour {px[x, y]}, not a {family} board colour")
        return names[px[x, y]]

    fills, marks = [], []
    for i in range(grid * grid):
        r, c = divmod(i, grid)
        x0, y0 = c * cell, r * cell
        if family == "dots":
            fills.append(name(x0 + 1, y0 + 1))
            marks.append(name(x0 + cell // 2, y0 + cell // 2))
            continue
        fills.append(name(x0 + 2, y0 + 2))
        ink = [(x - x0 - cell / 2, y - y0 - cell / 2) for x in range(x0, x0 + cell) for y in range(y0, y0 + cell)
               if px[x, y] == ARROW_RGB]
        if not ink:
            marks.append(None)
            continue
        horiz = sum((dx > 0) - (dx < 0) for dx, _ in ink)
        vert = sum((dy > 0) - (dy < 0) for _, dy in ink)
        marks.append(("right" if horiz > 0 else "left") if abs(horiz) > abs(vert) else ("down" if vert > 0 else "up"))
    if family == "dots":
        return Scene(grid, tuple(fills), (None,) * len(fills), tuple(marks))
    return Scene(grid, tuple(fills), tuple(marks))


def step_truth(image: Image.Image, category: str, kind: str, answer: str | None = None,
               per_read: bool = False) -> StepTruth:
    """The cells and contents of a question's rationale steps, from its image and its ``category`` field
    (``{family}-grid{g}-hops{h}``): three steps (the cells on the way in the middle one), or with ``per_read``
    (data written with ``step_per_read``) one step per cell of the chain. ``answer`` (the gold option's text),
    when given, is checked against the answer re-derived from the pixels.

    Raises ValueError for a category this benchmark does not write, an image that is not one of its boards, or an
    answer that disagrees with the pixels."""
    match = _CATEGORY.match(category or "")
    if not match:
        raise ValueError(f"category {category!r} is not a synthetic benchmark category (e.g. 'dots-grid3-hops2')")
    family, grid, hops = match.group(1), int(match.group(2)), int(match.group(3))
    scene = read_scene(image, grid, family)
    derived = solve(scene, kind, hops)
    if answer is not None and derived != answer:
        raise ValueError(f"the image gives the answer {derived!r}, the record says {answer!r}")
    path = tuple(scene.follow(hops))
    last = [path[-1]]
    if kind == "dot-match":
        last += [c for c, d in enumerate(scene.dots) if d == scene.dots[path[-1]] and c != path[-1]]
    if per_read:
        if family != "dots":
            raise ValueError("per-read steps are defined for the dots family only")
        cells = tuple((c,) for c in path[:-1]) + (tuple(last),)
        return StepTruth(grid, path, cells, tuple(scene.dots[c] for c in path), derived)
    cells = ((path[0],), tuple(path[1:-1]), tuple(last))
    if family == "dots":
        content = (scene.dots[path[0]], scene.dots[path[-2]], scene.dots[path[-1]])
    else:
        content = (scene.arrows[path[0]], scene.colours[path[-2]], scene.colours[path[-1]])
    return StepTruth(grid, path, cells, content, derived)
