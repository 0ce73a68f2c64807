"""A board (``Scene``), one generated question (``Example``) and the solver that answers a scene."""

from __future__ import annotations

from dataclasses import dataclass

from .chain import _neighbour
from .config import KINDS, START_COLOUR


@dataclass(frozen=True)
class Scene:
    """A board: row-major cell fill colours (the start cell is "white"), arrows (a direction or None) and, for the
    dots family, dots (the colour of each cell's dot; empty for arrow boards)."""

    grid: int
    colours: tuple[str, ...]
    arrows: tuple[str | None, ...]
    dots: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        return "dots" if self.dots else "arrows"

    @property
    def start(self) -> int:
        return self.colours.index(START_COLOUR)

    def neighbour(self, cell: int, direction: str) -> int | None:
        return _neighbour(cell, direction, self.grid)

    def step(self, cell: int) -> int:
        """The cell that ``cell``'s dot (the cell filled with its colour) or arrow (the neighbour) leads to."""
        if self.dots:
            dot = self.dots[cell]
            if dot == START_COLOUR or dot == self.colours[cell] or self.colours.count(dot) != 1:
                raise ValueError(f"cell {cell}'s {dot} dot does not lead to exactly one other non-white cell")
            return self.colours.index(dot)
        d = self.arrows[cell]
        nxt = None if d is None else self.neighbour(cell, d)
        if nxt is None:
            raise ValueError(f"cell {cell} has no arrow into the board")
        return nxt

    def follow(self, hops: int) -> list[int]:
        """Cells visited from the white cell following ``hops`` dots or arrows (start included). Errors on a dead
        end."""
        path = [self.start]
        for _ in range(hops):
            path.append(self.step(path[-1]))
        return path


@dataclass(frozen=True)
class Example:
    """One generated question: its scene plus every M3CoT text field."""

    scene: Scene
    kind: str
    hops: int
    question: str
    choices: tuple[str, ...]
    answer: str  # letter
    rationale: str
    path: tuple[int, ...]  # cells visited, start first


def solve(scene: Scene, kind: str, hops: int) -> str:
    """The answer's content (a colour word, a direction or a count as digits), read off the scene from scratch."""
    end = scene.follow(hops)[-1]
    if kind == "dot-colour":
        return scene.dots[end]
    if kind == "dot-count":
        return str(scene.dots.count(scene.dots[end]))
    if kind == "dot-match":
        twins = [c for c, d in enumerate(scene.dots) if d == scene.dots[end] and c != end]
        if len(twins) != 1:
            raise ValueError(f"{len(twins)} other cells have the reached cell's dot colour, expected exactly 1")
        return scene.colours[twins[0]]
    if kind == "arrow-colour":
        return scene.colours[end]
    if kind == "arrow-direction":
        if scene.arrows[end] is None:
            raise ValueError("the reached cell has no arrow")
        return scene.arrows[end]
    if kind == "colour-count":
        return str(scene.colours.count(scene.colours[end]))
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
