"""Synthetic visual multi-step reasoning benchmark ("dot chains" and "arrow grids"), written in M3CoT's schema.

Each image is a ``grid x grid`` board of coloured cells, one cell per Qwen2-VL merged image token (28 px = two
14 px patches merged 2x2), so a 3x3 board is an 84x84 image and 9 image tokens. Exactly one cell is white and
every question starts there. Two families of boards (``SynthConfig.family``):

``dots`` (the default): every cell has a distinct fill colour and a centred square dot whose colour is the fill of
*another* cell; following a dot means going to the cell filled with the dot's colour (content-addressed: no
spatial arithmetic). Start at the white cell, follow the dots ``hops`` times, then ask about the reached cell:

- ``dot-colour`` (domain ``synthetic-navigation``): what colour is that cell's dot?
- ``dot-count``  (domain ``synthetic-counting``):   how many cells have a dot of that colour?
- ``dot-match``  (domain ``synthetic-matching``):   which other cell has a dot of that colour? (its fill colour)

``arrows``: cells carry black arrows pointing at a neighbour; following an arrow means moving to that neighbour:

- ``arrow-colour``    (domain ``synthetic-navigation``): what colour is that cell?
- ``arrow-direction`` (domain ``synthetic-navigation``): which way does that cell's own arrow point?
- ``colour-count``    (domain ``synthetic-counting``):   how many cells on the board have that cell's colour?

The dots family is the default because a tiny from-scratch Qwen2-VL (RoPE only, no absolute positions) did not
learn the arrows' "move to the neighbour" step in the CPU budget, while a dot-chain prototype learned quickly
(docs/synthetic-task.md).

The rationale has exactly three sentences joined by ". " (the IVT-LR splitter turns it into three steps), each
reading a different cell (the white cell, the first cell reached, the last one); the last one also names the
option letter ("... and pink is option (A)") so that the content-to-letter mapping is an explicit, learnable step.
Answer letters are exactly balanced, answer contents uniform, options drawn symmetrically from the same vocabulary
(text-only models sit at chance), and board statistics are balanced so that only following the chain answers
reliably. See docs/synthetic-task.md for the design.

This module generates, renders and saves the data (``generate``, ``synth_main``); it is not the task object that
formats prompts and scores answers (that lives in ``ivtlr.tasks``). Everything is a pure function of the seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import random
import re
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

from PIL import Image, ImageDraw

# Arrow family: colour names in the order they enter the palette (--n-colors takes a prefix). Light enough for
# black arrows.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 170, 60),
    "blue": (60, 120, 240),
    "yellow": (240, 210, 40),
    "purple": (150, 80, 200),
    "orange": (245, 140, 30),
    "pink": (245, 130, 190),
    "cyan": (60, 210, 220),
    "brown": (150, 95, 50),
    "gray": (150, 150, 150),
}
# Dots family (the prototype's colours): fills and dots; a 3x3 board uses white + 8 of these 9, all distinct.
DOT_PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 47),
    "green": (40, 160, 60),
    "blue": (40, 90, 220),
    "yellow": (240, 200, 30),
    "purple": (140, 60, 180),
    "orange": (240, 130, 20),
    "pink": (240, 120, 190),
    "brown": (130, 80, 40),
    "gray": (128, 128, 128),
}
# Dots family, palette "wheel": 8 colours on a circle around mid-gray in RGB space (radius 150, 45 degrees apart),
# so every colour is an extreme point of the palette's convex hull: a linear function of the pixels can single out
# any one of them (it cannot for gray or brown in DOT_PALETTE, which lie inside the hull of the others).
WHEEL_PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (250, 66, 66),
    "orange": (214, 159, 9),
    "lime": (128, 234, 21),
    "green": (41, 246, 96),
    "cyan": (5, 189, 189),
    "blue": (41, 96, 246),
    "purple": (127, 21, 234),
    "magenta": (214, 9, 159),
}
DOT_PALETTES = {"classic": DOT_PALETTE, "wheel": WHEEL_PALETTE}
DOT_STYLES = ("small", "large", "quadrant")
STEP_STYLES = ("template", "content_first", "content_goto", "pairs")
START_COLOUR = "white"
START_RGB = (255, 255, 255)
ARROW_RGB = (0, 0, 0)
BORDER_RGB = (60, 60, 60)
DOT_BORDER_RGB = (40, 40, 40)
DIRECTIONS = ("up", "down", "left", "right")
_OFFSET = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}  # (d_row, d_col)
DOT_KINDS = ("dot-colour", "dot-count", "dot-match")
ARROW_KINDS = ("arrow-colour", "arrow-direction", "colour-count")
FAMILIES: dict[str, tuple[str, ...]] = {"dots": DOT_KINDS, "arrows": ARROW_KINDS}
KINDS = DOT_KINDS + ARROW_KINDS  # every known kind; SynthConfig().kinds is the default family's
DOMAIN = {
    "dot-colour": "synthetic-navigation",
    "dot-count": "synthetic-counting",
    "dot-match": "synthetic-matching",
    "arrow-colour": "synthetic-navigation",
    "arrow-direction": "synthetic-navigation",
    "colour-count": "synthetic-counting",
}
LETTERS = "ABCDEFGHIJ"
SPLITS = ("train", "test")
_TIMES = {1: "once", 2: "twice", 3: "three times", 4: "four times"}


@dataclass
class SynthConfig:
    """Difficulty knobs of the benchmark (all CLI flags of ``ivtlr data synth`` except out/n/seed)."""

    family: Literal["dots", "arrows"] = "dots"
    """Board family: dots (follow dot colours to the cell of that fill; learnable without absolute positions) or
    arrows (follow arrows to neighbouring cells)."""
    grid: int = 3
    """Board side in cells (the image has grid*grid cells = image tokens). 3 learns in minutes on 2 CPU cores;
    dots needs a distinct fill per cell, so grid <= 3."""
    cell: int = 28
    """Cell side in pixels. 28 px = one Qwen2-VL merged token (14 px patches, 2x2 merge); keep it for Qwen2-VL."""
    image_size: int | None = None
    """Image side in pixels; when given it must be a multiple of grid and sets cell = image_size // grid."""
    palette: Literal["classic", "wheel"] = "classic"
    """Dots family colours: classic (red, green, blue, yellow, purple, orange, pink, brown, gray) or wheel (8 colours
    evenly spaced on a circle in RGB space, each linearly separable from the others)."""
    dot_style: Literal["small", "large", "quadrant"] = "small"
    """Dots family: the dot's shape. small: a centred square of 3/7 of the cell (12 px of 28); large: centred,
    0.6 of the cell (16 px); quadrant: the cell's bottom-right quarter (with 28 px cells, exactly the bottom-right
    14 px patch of the token, so every patch of a token is one plain colour)."""
    n_colors: int | None = None
    """How many colours (a prefix of the family's palette; white is reserved for the start cell); none: 9 for dots
    (all of DOT_PALETTE), 6 for arrows. Dots needs at least grid*grid-1."""
    hops: int = 2
    """Dots or arrows to follow from the white cell (2..grid*grid//2; >= 2 so that no single look answers)."""
    distractors: int | None = None
    """Arrows family only: arrows drawn off the followed path (each a random in-board direction); none: every
    cell has an arrow."""
    n_choices: int = 4
    """Options per question (2..4); the answer letter is balanced over them."""
    fixed_options: bool = False
    """Dots family: every question of a kind lists the same options in a fixed order (dot-colour and dot-match:
    every non-white colour in palette order; dot-count: 1..n_choices), so the answer letter is a fixed function
    of the answer. Measured: tiny from-scratch models learn the dot chain long before the lookup of an answer's
    letter among shuffled options; this knob takes that lookup away (the CPU demo uses it)."""
    step_style: Literal["template", "content_first", "content_goto", "pairs"] = "template"
    """Dots family: how a rationale step is worded. template: "The red cell has a blue dot" (every step opens
    with the same word); content_first: "blue dot in the red cell" (every step opens with the colour it reads, so
    the hidden state at a step boundary, the one IVT-LR feeds back, has to predict that colour); content_goto:
    content_first plus where the chain goes next, "blue dot in the red cell, so go to the blue cell" (the next
    read's address ends the step); pairs: "red blue, the red cell has a blue dot" (every step opens with the
    cell it reads, immediately followed by what it reads there, so each read is one lookup from the token
    before it)."""
    kinds: tuple[str, ...] = ()
    """Question kinds to mix, balanced (comma-separated); empty: all of the family's (dots: dot-colour,
    dot-count, dot-match; arrows: arrow-colour, arrow-direction, colour-count)."""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {tuple(FAMILIES)}, got {self.family!r}")
        self.kinds = tuple(self.kinds) or FAMILIES[self.family]
        dots = self.family == "dots"
        if self.palette not in DOT_PALETTES:
            raise ValueError(f"palette must be one of {tuple(DOT_PALETTES)}, got {self.palette!r}")
        if self.dot_style not in DOT_STYLES:
            raise ValueError(f"dot_style must be one of {DOT_STYLES}, got {self.dot_style!r}")
        palette = self.palette_rgb
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 2:
            raise ValueError(f"grid must be an integer >= 2, got {self.grid!r}")
        if self.image_size is not None:
            if self.image_size < self.grid or self.image_size % self.grid:
                raise ValueError(f"image_size={self.image_size} must be a positive multiple of grid={self.grid}")
            self.cell = self.image_size // self.grid
        if self.cell < 8:
            raise ValueError(f"cell must be >= 8 pixels to draw an arrow or a dot, got {self.cell}")
        self.image_size = self.grid * self.cell
        cells = self.grid * self.grid - 1  # non-white cells
        if dots and cells > len(palette):
            raise ValueError(f"the dots family needs a distinct fill per cell: grid*grid-1 = {cells} colours, "
                             f"but the {self.palette} palette has {len(palette)} (use grid <= 3, or --family arrows)")
        if self.n_colors is None:
            self.n_colors = len(palette) if dots else 6
        lowest = cells if dots else 2
        if not lowest <= self.n_colors <= len(palette):
            raise ValueError(f"n_colors must be in {lowest}..{len(palette)} for the {self.family} family "
                             f"on a {self.grid}x{self.grid} grid, got {self.n_colors}")
        if not 2 <= self.n_choices <= len(DIRECTIONS):
            raise ValueError(f"n_choices must be in 2..{len(DIRECTIONS)}, got {self.n_choices}")
        if self.hops < 2:
            raise ValueError(f"hops must be >= 2 (the answer needs two reads of the image), got {self.hops}")
        if self.hops > self.grid * self.grid // 2:  # longer self-avoiding paths get slow to sample, and unreadable
            raise ValueError(f"hops={self.hops} is too many for a {self.grid}x{self.grid} grid "
                             f"(at most grid*grid//2 = {self.grid * self.grid // 2})")
        if self.step_style not in STEP_STYLES:
            raise ValueError(f"step_style must be one of {STEP_STYLES}, got {self.step_style!r}")
        if self.step_style != "template" and not dots:
            raise ValueError(f"step_style {self.step_style} is defined for the dots family only")
        if self.distractors is not None and (dots or self.distractors < 0):
            raise ValueError(f"distractors must be >= 0 or None (all cells), and is for the arrows family only "
                             f"(every dots cell has a dot), got {self.distractors}")
        known = FAMILIES[self.family]
        if any(k not in known for k in self.kinds) or len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds must be distinct names among {known} (family {self.family}), got {self.kinds}")
        if "arrow-colour" in self.kinds:
            if self.n_colors < self.n_choices or cells < self.n_choices:
                raise ValueError(f"arrow-colour needs n_colors >= n_choices and grid*grid-1 >= n_choices, got "
                                 f"n_colors={self.n_colors}, grid={self.grid}, n_choices={self.n_choices}")
            if self.hops - 1 > cells - cells // self.n_choices:
                raise ValueError(f"arrow-colour: hops={self.hops} passes more cells than a balanced "
                                 f"{self.grid}x{self.grid} board has in non-answer colours")
        if "colour-count" in self.kinds and self.max_count < self.n_choices:
            raise ValueError(f"colour-count needs grid*grid-hops >= n_choices cells off the path, got "
                             f"{self.grid * self.grid - self.hops} < {self.n_choices}")
        if "dot-colour" in self.kinds and cells - 1 < self.n_choices:
            raise ValueError(f"dot-colour draws its options from the grid*grid-1 >= n_choices+1 non-white fills "
                             f"other than the reached cell's, got grid={self.grid}, n_choices={self.n_choices}")
        if "dot-count" in self.kinds and self.max_count < self.n_choices:
            raise ValueError(f"dot-count needs grid*grid-1-hops >= n_choices cells off the chain, got "
                             f"{cells - self.hops} < {self.n_choices}")
        if "dot-match" in self.kinds and cells - self.hops < max(self.n_choices, 2):
            raise ValueError(f"dot-match draws its options from the grid*grid-1-hops >= n_choices cells off the "
                             f"chain, got {cells - self.hops} < {self.n_choices}")

    @property
    def palette_rgb(self) -> dict[str, tuple[int, int, int]]:
        return DOT_PALETTES[self.palette] if self.family == "dots" else PALETTE

    @property
    def colours(self) -> tuple[str, ...]:
        return tuple(self.palette_rgb)[: self.n_colors]

    @property
    def max_count(self) -> int:
        """Largest answer of colour-count / dot-count: counts are drawn uniformly from 1..max_count (arrows: the
        reached cell plus cells off the followed path; dots: the reached cell's dot plus dots off the chain)."""
        off_chain = self.grid * self.grid - self.hops - (1 if self.family == "dots" else 0)
        return min(off_chain, max(self.n_choices, self.grid + 1))


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


# ---------------------------------------------------------------------------------------------------------------
# Generation


def _neighbour(cell: int, direction: str, grid: int) -> int | None:
    r, c = divmod(cell, grid)
    dr, dc = _OFFSET[direction]
    r, c = r + dr, c + dc
    return r * grid + c if 0 <= r < grid and 0 <= c < grid else None


def _in_board_directions(cell: int, grid: int) -> list[str]:
    return [d for d in DIRECTIONS if _neighbour(cell, d, grid) is not None]


def _balanced(key: str, index: int, n: int) -> int:
    """Index in 0..n-1, exactly balanced over each block of n consecutive indices (block order shuffled)."""
    block, pos = divmod(index, n)
    perm = list(range(n))
    random.Random(f"{key}/{block}").shuffle(perm)
    return perm[pos]


def _sample_path(rng: random.Random, grid: int, hops: int, final_dir: str | None) -> tuple[list[int], list[str]]:
    """A self-avoiding path of hops moves from a random start (randomised DFS).

    With final_dir, the reached cell must be able to point that way, and the last move must point elsewhere (so that
    stopping one hop early gives a wrong answer)."""
    starts = list(range(grid * grid))
    rng.shuffle(starts)

    def extend(path: list[int], dirs: list[str]) -> bool:
        if len(dirs) == hops:  # the reached cell's own arrow must stay in the board and differ from the last move
            return final_dir is None or (_neighbour(path[-1], final_dir, grid) is not None and dirs[-1] != final_dir)
        options = [d for d in DIRECTIONS if (n := _neighbour(path[-1], d, grid)) is not None and n not in path]
        rng.shuffle(options)
        for d in options:
            path.append(_neighbour(path[-1], d, grid))
            dirs.append(d)
            if extend(path, dirs):
                return True
            path.pop()
            dirs.pop()
        return False

    for s in starts:
        path, dirs = [s], []
        if extend(path, dirs):
            return path, dirs
    raise ValueError(f"no path of {hops} hops fits a {grid}x{grid} grid")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _place_choices(rng: random.Random, answer: str, distractors: Sequence[str], letter: int) -> tuple[str, ...]:
    others = list(distractors)
    rng.shuffle(others)
    others.insert(letter, answer)
    return tuple(others)


def _draw_arrows(rng: random.Random, grid: int, path: list[int], dirs: list[str], final_dir: str | None,
                 distractors: int | None) -> list[str | None]:
    """The followed arrows, the reached cell's own arrow (if any), then distractor arrows off the path.

    Distractors take the least used in-board direction so far (ties at random), which keeps the four directions
    about equally frequent: how often a direction appears on the board then says little about the answer."""
    arrows: list[str | None] = [None] * (grid * grid)
    for cell, d in zip(path, dirs):
        arrows[cell] = d
    if final_dir is not None:
        arrows[path[-1]] = final_dir
    free = [c for c, a in enumerate(arrows) if a is None]
    rng.shuffle(free)
    used = {d: sum(a == d for a in arrows) for d in DIRECTIONS}
    for c in free[: len(free) if distractors is None else distractors]:
        options = _in_board_directions(c, grid)
        least = min(used[d] for d in options)
        d = rng.choice([d for d in options if used[d] == least])
        arrows[c], used[d] = d, used[d] + 1
    return arrows


def _colour_balanced(rng: random.Random, cfg: SynthConfig, path: list[int]) -> tuple[list[str], list[str]]:
    """arrow-colour boards: the n_choices option colours each cover the same number of cells.

    So no option stands out by its area; the rest (if cells do not divide evenly) takes non-option colours where
    the palette has some. The reached cell has options[0]; the cells on the way have other option colours (so
    stopping early lands on a wrong option). Returns (colours, options)."""
    start, end, n_cells = path[0], path[-1], cfg.grid * cfg.grid
    options = rng.sample(cfg.colours, cfg.n_choices)
    target = options[0]
    extra = [c for c in cfg.colours if c not in options] or options
    per_option = (n_cells - 1) // cfg.n_choices
    bag = [o for o in options for _ in range(per_option)]
    bag += [rng.choice(extra) for _ in range(n_cells - 1 - len(bag))]
    bag.remove(target)
    colours = [""] * n_cells
    colours[start], colours[end] = START_COLOUR, target
    for c in path[1:-1]:
        near = [b for b in bag if b != target and b in options] or [b for b in bag if b != target]
        colours[c] = rng.choice(near)
        bag.remove(colours[c])
    rng.shuffle(bag)
    for c in range(n_cells):
        if not colours[c]:
            colours[c] = bag.pop()
    return colours, options


def _colour_with_decoys(rng: random.Random, cfg: SynthConfig, path: list[int]) -> list[str]:
    """colour-count boards: the reached colour covers k cells, k uniform in 1..max_count, and decoy colours cover
    other counts from 1..max_count (random order, as many as fit), so the set of counts seen on the board says as
    little as possible about which one is asked for (nothing when all counts fit, as on a 4x4 board).
    The cells on the way never have the reached colour."""
    start, end, n_cells = path[0], path[-1], cfg.grid * cfg.grid
    k = rng.randint(1, cfg.max_count)
    target, *free = rng.sample(cfg.colours, cfg.n_colors)
    sizes = [d for d in range(1, cfg.max_count + 1) if d != k]
    rng.shuffle(sizes)
    budget = n_cells - 1 - k
    bag: list[str] = []
    for d in sizes:
        if d <= budget and len(free) > 1:  # keep one colour back for the remainder
            bag += [free.pop()] * d
            budget -= d
    bag += [rng.choice(free) for _ in range(budget)]
    colours = [""] * n_cells
    colours[start], colours[end] = START_COLOUR, target
    off_path = [c for c in range(n_cells) if c not in path]
    for c in rng.sample(off_path, k - 1):
        colours[c] = target
    rng.shuffle(bag)
    for c in range(n_cells):
        if not colours[c]:
            colours[c] = bag.pop()
    return colours


# Dots family


def _assign(rng: random.Random, cells: list[int], bag: list[str], fills: list[str]) -> list[str]:
    """Dot colours of ``bag`` on ``cells`` (same length), no cell getting its own fill (shuffle until it fits).

    Callers keep every colour's count at most len(cells) minus one if its own cell is among them (Hall's condition
    here), so a fit exists and a random order fits with probability about 1/e."""
    for _ in range(10_000):
        rng.shuffle(bag)
        if all(fills[c] != d for c, d in zip(cells, bag)):
            return bag
    raise AssertionError("no dot assignment found")  # pragma: no cover - excluded by the callers' counts


def _dot_chain(rng: random.Random, cfg: SynthConfig) -> tuple[list[str], list[int], list[str | None]]:
    """Distinct fills (white at a random cell) and a random chain of hops distinct non-white cells.

    Returns (fills, path with the start first, dots with the chain's dots set: each path cell's dot is the next
    cell's fill; the last cell's dot is left for the kind to choose)."""
    n_cells = cfg.grid * cfg.grid
    fills = [START_COLOUR] + rng.sample(cfg.colours, n_cells - 1)
    rng.shuffle(fills)
    start = fills.index(START_COLOUR)
    path = [start] + rng.sample([c for c in range(n_cells) if c != start], cfg.hops)
    dots: list[str | None] = [None] * n_cells
    for here, there in zip(path, path[1:]):
        dots[here] = fills[there]
    return fills, path, dots


def _dots_colour(rng: random.Random, cfg: SynthConfig, fills, path, dots) -> tuple[str, list[str]]:
    """dot-colour: the reached cell's dot is uniform over the non-white fills but its own (an earlier chain colour
    included: the chain may loop back), the options are 4 of those same colours (so stopping early, or the colours
    read on the way, rule out nothing), and the dots off the chain make every option about equally frequent as a
    dot (2 dots each on 3x3), so "the option seen most often as a dot" is chance."""
    end = path[-1]
    pool = [f for f in fills if f not in (START_COLOUR, fills[end])]
    target = rng.choice(pool)
    dots[end] = target
    options = [target] + rng.sample([f for f in pool if f != target], cfg.n_choices - 1)
    per_option = len(fills) // cfg.n_choices
    used = {f: dots.count(f) for f in fills}
    free = [c for c in range(len(fills)) if dots[c] is None]
    rng.shuffle(free)
    for c in free:
        allowed = [f for f in fills if f not in (START_COLOUR, fills[c])]
        short = [f for f in allowed if f in options and used[f] < per_option]
        if short:
            least = min(used[f] for f in short)
            pick = rng.choice([f for f in short if used[f] == least])
        else:
            pick = rng.choice([f for f in allowed if f not in options] or allowed)
        dots[c], used[pick] = pick, used[pick] + 1
    return target, options[1:]


def _dots_count(rng: random.Random, cfg: SynthConfig, fills, path, dots) -> str:
    """dot-count: the reached cell's dot colour (never a chain colour) is on k dots, k uniform in 1..max_count;
    decoy colours (chain colours included, counting their chain dot) are on other counts from 1..max_count, in
    random order, as many as fit, so the counts seen on the board say little about which one is asked for."""
    end, n_cells = path[-1], len(fills)
    chain = {fills[c] for c in path[1:]}
    target = rng.choice([f for f in fills if f != START_COLOUR and f not in chain])
    dots[end] = target
    free = [c for c in range(n_cells) if dots[c] is None]
    k = rng.randint(1, cfg.max_count)
    bag = [target] * (k - 1)
    budget = len(free) - len(bag)
    sizes = [d for d in range(1, cfg.max_count + 1) if d != k]
    rng.shuffle(sizes)
    candidates = [f for f in fills if f not in (START_COLOUR, target)]
    rng.shuffle(candidates)
    decoys = set()
    for d in sizes:
        for f in candidates:
            need = d - dots.count(f)
            own_free = fills.index(f) in free
            if f not in decoys and 0 <= need <= budget and bag.count(f) + need <= len(free) - own_free:
                bag += [f] * need
                budget -= need
                decoys.add(f)
                break
    rest = [f for f in candidates if f not in decoys]  # the remainder keeps the target's and decoys' counts exact
    cells = rng.sample(free, len(bag))
    for c, d in zip(cells, _assign(rng, cells, bag, fills)):
        dots[c] = d
    for c in free:
        if dots[c] is None:
            dots[c] = rng.choice([f for f in rest if f != fills[c]])
    return str(k)


def _dots_match(rng: random.Random, cfg: SynthConfig, fills, path, dots) -> tuple[str, list[str]]:
    """dot-match: exactly one other cell (the twin, off the chain) has the reached cell's dot colour (never a chain
    colour); the other dots come in pairs too where they fit (the chain colours' second dots first, then pairs of
    fresh colours, at most one single), so "the option whose dot has a twin" is no clue. Options are fills of cells
    off the chain (the chain's colours never are), preferring cells whose dot has a twin."""
    end, n_cells = path[-1], len(fills)
    chain = [fills[c] for c in path[1:]]
    target = rng.choice([f for f in fills if f != START_COLOUR and f not in chain])
    dots[end] = target
    free = [c for c in range(n_cells) if dots[c] is None]
    twin = rng.choice([c for c in free if fills[c] != target])
    dots[twin] = target
    free.remove(twin)
    seconds = chain[:]
    rng.shuffle(seconds)
    bag = seconds[: len(free)]
    fresh = [f for f in fills if f not in (START_COLOUR, target) and f not in chain]
    rng.shuffle(fresh)
    while len(bag) < len(free):
        f = fresh.pop()
        bag += [f] * min(2, len(free) - len(bag))
    for c, d in zip(free, _assign(rng, free, bag, fills)):
        dots[c] = d
    answer = fills[twin]
    off_chain = [c for c in range(n_cells) if c not in path and c != twin]
    rng.shuffle(off_chain)
    off_chain.sort(key=lambda c: dots.count(dots[c]) != 2)  # stable: paired dots first, random within
    return answer, [fills[c] for c in off_chain[: cfg.n_choices - 1]]


def _make_dot_example(cfg: SynthConfig, rng: random.Random, kind: str, letter: int) -> Example:
    fills, path, dots = _dot_chain(rng, cfg)
    if kind == "dot-colour":
        answer, distractors = _dots_colour(rng, cfg, fills, path, dots)
    elif kind == "dot-count":
        answer = _dots_count(rng, cfg, fills, path, dots)
        distractors = rng.sample([str(k) for k in range(1, cfg.max_count + 1) if str(k) != answer],
                                 cfg.n_choices - 1)
    else:
        answer, distractors = _dots_match(rng, cfg, fills, path, dots)
    scene = Scene(cfg.grid, tuple(fills), (None,) * len(fills), tuple(dots))
    end = path[-1]

    # Text. Step 1 reads the white cell, step 2 the cells on the way, step 3 the reached cell (and the board).
    if cfg.step_style == "pairs":
        def has(c: int) -> str:
            return f"{fills[c]} {dots[c]}, the {fills[c]} cell has {_article(dots[c])} {dots[c]} dot"

        step1, step2, step3 = has(path[0]), ", then ".join(has(c) for c in path[1:-1]), has(end)
    elif cfg.step_style in ("content_first", "content_goto"):
        def has(c: int, goto: bool = True) -> str:
            text = f"{dots[c]} dot in the {fills[c]} cell"
            return text + f", so go to the {dots[c]} cell" if goto and cfg.step_style == "content_goto" else text

        step1, step2, step3 = has(path[0]), ", then ".join(has(c) for c in path[1:-1]), has(end, goto=False)
    else:
        def has(c: int) -> str:
            return f"The {fills[c]} cell has {_article(dots[c])} {dots[c]} dot"

        step1, step2, step3 = has(path[0]), ", then the ".join(has(c)[4:] for c in path[1:-1]), has(end)
        step2 = "The " + step2

    lead = f"Start at the white cell and follow the dots {_TIMES.get(cfg.hops, f'{cfg.hops} times')}"
    if kind == "dot-colour":
        question = f"{lead}. What colour is the dot of the cell you reach?"
    elif kind == "dot-count":
        question = f"{lead}. How many cells have a dot of the same colour as the dot of the cell you reach?"
        step3 += f", there {'is' if answer == '1' else 'are'} {answer} {dots[end]} {'dot' if answer == '1' else 'dots'}"
    else:
        question = f"{lead}. Which other cell has a dot of the same colour as the dot of the cell you reach?"
        step3 += f", the {answer} cell has {_article(dots[end])} {dots[end]} dot too"
    if cfg.fixed_options:
        choices = tuple(str(k) for k in range(1, cfg.n_choices + 1)) if kind == "dot-count" else tuple(
            c for c in cfg.colours if c != START_COLOUR)
        letter = choices.index(answer)
    else:
        choices = _place_choices(rng, answer, distractors, letter)
    step3 += f", and {answer} is option ({LETTERS[letter]})"
    rationale = f"{step1}. {step2}. {step3}."
    assert solve(scene, kind, cfg.hops) == answer, "generator and solver disagree"
    return Example(scene, kind, cfg.hops, question, choices, LETTERS[letter], rationale, tuple(path))


def make_example(cfg: SynthConfig, seed: int, split: str, index: int, kind: str | None = None) -> Example:
    """Generate example ``index`` of ``split``: a pure function of (cfg, seed, split, index).

    Args:
        cfg: difficulty knobs.
        seed: dataset seed.
        split: any name; "train" and "test" draw independent streams.
        index: position in the split. The kind and the answer letter are balanced over consecutive indices.
        kind: force a kind of cfg.family instead of the balanced choice (used for the docs' examples).
    Returns:
        The Example (scene, question, choices, answer letter, 3-sentence rationale).
    """
    key = f"ivtlr-synth/{seed}/{split}"
    kind = kind or cfg.kinds[_balanced(f"{key}/kind", index, len(cfg.kinds))]
    letter = _balanced(f"{key}/letter", index, cfg.n_choices)
    if kind not in cfg.kinds and kind not in FAMILIES[cfg.family]:
        raise ValueError(f"kind {kind!r} is not of the {cfg.family} family {FAMILIES[cfg.family]}")
    rng = random.Random(f"{key}/{index}")
    if cfg.family == "dots":
        return _make_dot_example(cfg, rng, kind, letter)
    g, n_cells = cfg.grid, cfg.grid * cfg.grid

    final_dir = rng.choice(DIRECTIONS) if kind == "arrow-direction" else None
    path, dirs = _sample_path(rng, g, cfg.hops, final_dir)
    start, end = path[0], path[-1]
    arrows = _draw_arrows(rng, g, path, dirs, final_dir, cfg.distractors)
    options: list[str] = []
    if kind == "arrow-colour":
        colours, options = _colour_balanced(rng, cfg, path)
    elif kind == "colour-count":
        colours = _colour_with_decoys(rng, cfg, path)
    else:
        colours = [START_COLOUR if c == start else rng.choice(cfg.colours) for c in range(n_cells)]
    scene = Scene(g, tuple(colours), tuple(arrows))

    # Text. Step 1 reads the start cell, step 2 the cells on the way, step 3 the reached cell (or the whole board).
    hop_phrases = [f"{_article(colours[c])} {colours[c]} cell" for c in path[1:]]
    step1 = f"The white cell has an arrow pointing {dirs[0]}"
    lead = f"Start at the white cell and follow {cfg.hops} arrows"
    if kind == "colour-count":
        answer = str(scene.colours.count(colours[end]))
        distractors = rng.sample([str(k) for k in range(1, cfg.max_count + 1) if str(k) != answer], cfg.n_choices - 1)
        question = f"{lead}. How many cells have the colour of the cell you reach?"
        step2 = "It leads to " + "".join(
            p + (f" whose arrow points {dirs[i + 1]} to " if i + 1 < len(hop_phrases) else "")
            for i, p in enumerate(hop_phrases))
        noun = "cell" if answer == "1" else "cells"
        verb = "is" if answer == "1" else "are"
        step3 = f"There {verb} {answer} {colours[end]} {noun}"
    else:
        step2 = "It leads to " + ", then to ".join(
            f"{p} whose arrow points {dirs[i + 1]}" for i, p in enumerate(hop_phrases[:-1]))
        if kind == "arrow-colour":
            answer = colours[end]
            distractors = [o for o in options if o != answer]
            question = f"{lead}. What colour is the cell you reach?"
            step3 = f"It leads to {hop_phrases[-1]}"
        else:
            answer = final_dir
            distractors = rng.sample([d for d in DIRECTIONS if d != answer], cfg.n_choices - 1)
            question = f"{lead}. Which way does the arrow in the cell you reach point?"
            step3 = f"It leads to {hop_phrases[-1]} whose arrow points {answer}"
    choices = _place_choices(rng, answer, distractors, letter)
    step3 += f", and {answer} is option ({LETTERS[letter]})"
    rationale = f"{step1}. {step2}. {step3}."
    assert solve(scene, kind, cfg.hops) == answer, "generator and solver disagree"
    return Example(scene, kind, cfg.hops, question, choices, LETTERS[letter], rationale, tuple(path))

# ---------------------------------------------------------------------------------------------------------------
# Rendering


def _arrow_polygon(x0: int, y0: int, s: int, direction: str) -> list[tuple[float, float]]:
    # (u along the arrow, v across it) in cell units around the centre; the head half carries ~2x the ink of the
    # shaft half, so the direction is visible to a patch-level encoder, not only to the eye.
    uv = [(-0.32, -0.08), (0.0, -0.08), (0.0, -0.28), (0.36, 0.0), (0.0, 0.28), (0.0, 0.08), (-0.32, 0.08)]
    cx, cy = x0 + s / 2, y0 + s / 2
    to_xy = {"right": lambda u, v: (u, v), "left": lambda u, v: (-u, v),
             "down": lambda u, v: (v, u), "up": lambda u, v: (v, -u)}[direction]
    return [(cx + dx * s, cy + dy * s) for dx, dy in (to_xy(u, v) for u, v in uv)]


def dot_box(cell: int, style: str = "small") -> tuple[int, int]:
    """First and last pixel offset (on both axes) of a cell's square dot: small 8..19 (12 px) in a 28 px cell,
    large 6..21 (16 px), quadrant 14..26 (the bottom-right quarter inside the 1 px border). The cell's centre
    pixel is inside the dot in every style (``read_scene`` reads it there)."""
    if style == "quadrant":
        return cell // 2, cell - 2
    side = max(2, cell * (3 if style == "small" else 6) // (7 if style == "small" else 10))
    lo = (cell - side) // 2
    return lo, lo + side - 1


def render(scene: Scene, cell: int = 28, palette: dict[str, tuple[int, int, int]] | None = None,
           dot_style: str = "small") -> Image.Image:
    """Draw the scene: an RGB image of side grid*cell, one filled cell per grid position with a 1 px border, plus
    a centred square dot per cell (dots family; ``palette``: name -> RGB, default DOT_PALETTE) or a black arrow
    (arrows family)."""
    size = scene.grid * cell
    if scene.dots:
        img = Image.new("RGB", (size, size), DOT_BORDER_RGB)
        draw = ImageDraw.Draw(img)
        lo, hi = dot_box(cell, dot_style)
        rgb = (palette or DOT_PALETTE) | {START_COLOUR: START_RGB}
        for i, (colour, dot) in enumerate(zip(scene.colours, scene.dots)):
            r, c = divmod(i, scene.grid)
            x0, y0 = c * cell, r * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=rgb[colour], outline=DOT_BORDER_RGB)
            draw.rectangle([x0 + lo, y0 + lo, x0 + hi, y0 + hi], fill=rgb[dot])
        return img
    img = Image.new("RGB", (size, size), BORDER_RGB)
    draw = ImageDraw.Draw(img)
    for i, (colour, arrow) in enumerate(zip(scene.colours, scene.arrows)):
        r, c = divmod(i, scene.grid)
        x0, y0 = c * cell, r * cell
        rgb = START_RGB if colour == START_COLOUR else PALETTE[colour]
        draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=rgb, outline=BORDER_RGB)
        if arrow is not None:
            draw.polygon(_arrow_polygon(x0, y0, cell, arrow), fill=ARROW_RGB)
    return img


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")  # no timestamps or other varying chunks: same image, same bytes
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Ground truth read back from a record (for the diagnostics of ``ivtlr analyze``)


@dataclass(frozen=True)
class StepTruth:
    """What each rationale step of one question reads, recovered from its image and category alone.

    ``path``: the chain's cells, start first (row-major cell indices of the board). ``cells``: per rationale step
    (3), the cells it reads (step 1: the start; step 2: the cells on the way; step 3: the reached cell, plus the
    twin for dot-match). ``content``: per step, the content it reads that the next step needs (dots: the dot
    colour of the last chain cell it reads; arrows: the start's arrow, then the colours of the cells reached).
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


def step_truth(image: Image.Image, category: str, kind: str, answer: str | None = None) -> StepTruth:
    """The cells and contents of a question's three rationale steps, from its image and its ``category`` field
    (``{family}-grid{g}-hops{h}``). ``answer`` (the gold option's text), when given, is checked against the answer
    re-derived from the pixels.

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
    cells = ((path[0],), tuple(path[1:-1]), tuple(last))
    if family == "dots":
        content = (scene.dots[path[0]], scene.dots[path[-2]], scene.dots[path[-1]])
    else:
        content = (scene.arrows[path[0]], scene.colours[path[-2]], scene.colours[path[-1]])
    return StepTruth(grid, path, cells, content, derived)


# ---------------------------------------------------------------------------------------------------------------
# Dataset


def m3cot_features():
    """The ``datasets.Features`` of M3CoT (LightChen2333/M3CoT), which this benchmark reproduces exactly."""
    from datasets import Features, Image as ImageFeature, Sequence, Value

    return Features({
        "id": Value("string"),
        "category": Value("string"),
        "image_id": Value("string"),
        "question": Value("string"),
        "choices": Sequence(Value("string")),
        "context": Value("string"),
        "answer": Value("string"),
        "rationale": Value("string"),
        "split": Value("string"),
        "image": ImageFeature(),
        "domain": Value("string"),
        "topic": Value("string"),
    })


def to_record(ex: Example, split: str, index: int, cfg: "SynthConfig") -> dict:
    """The M3CoT row of an example (the image as PNG bytes)."""
    uid = f"synth-{split}-{index:06d}"
    return {
        "id": uid,
        "category": f"{ex.scene.family}-grid{ex.scene.grid}-hops{ex.hops}",
        "image_id": uid,
        "question": ex.question,
        "choices": list(ex.choices),
        "context": "",
        "answer": ex.answer,
        "rationale": ex.rationale,
        "split": split,
        "image": {"bytes": _png_bytes(render(ex.scene, cfg.cell, cfg.palette_rgb, cfg.dot_style)), "path": None},
        "domain": DOMAIN[ex.kind],
        "topic": ex.kind,
    }


def generate(out_dir: str | Path | None, n_train: int, n_test: int, seed: int = 0, **difficulty):
    """Generate the benchmark and save it with ``DatasetDict.save_to_disk``.

    Args:
        out_dir: where to save (the splits plus ``synth_config.json``); None only builds it in memory.
        n_train, n_test: split sizes (>= 1).
        seed: the same seed and knobs give byte-identical data.
        **difficulty: SynthConfig fields (family, grid, cell, image_size, n_colors, hops, distractors, n_choices,
            kinds).
    Returns:
        ``datasets.DatasetDict`` with splits "train" and "test" in M3CoT's Features.
    Raises:
        ValueError: bad sizes or knobs; TypeError: an unknown knob.
    """
    from datasets import Dataset, DatasetDict

    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    known = {f.name for f in dataclasses.fields(SynthConfig)}
    if unknown := sorted(set(difficulty) - known):
        raise TypeError(f"unknown difficulty knob(s) {unknown}; expected some of {sorted(known)}")
    cfg = SynthConfig(**difficulty)
    features = m3cot_features()
    splits = {}
    for split, n in zip(SPLITS, (n_train, n_test)):
        rows = [to_record(make_example(cfg, seed, split, i), split, i, cfg) for i in range(n)]
        columns = {k: [r[k] for r in rows] for k in features}
        splits[split] = Dataset.from_dict(columns, features=features, split=split)
    dd = DatasetDict(splits)
    if out_dir is not None:
        out = Path(out_dir)
        dd.save_to_disk(str(out))
        resolved = {"seed": seed, "n_train": n_train, "n_test": n_test, **dataclasses.asdict(cfg)}
        (out / "synth_config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    return dd


def text_corpus(n: int = 2000, seed: int = 0, **difficulty) -> Iterator[str]:
    """Questions, option texts and rationales of n train examples (no images): tokenizer training text."""
    cfg = SynthConfig(**difficulty)
    for i in range(n):
        ex = make_example(cfg, seed, "train", i)
        yield ex.question
        yield from ex.choices
        yield ex.rationale


# ---------------------------------------------------------------------------------------------------------------
# CLI


def _add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One --flag per dataclass field, typed from its annotation, help from its docstring."""
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    for f in dataclasses.fields(cls):
        hint, flag = hints[f.name], "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = (",".join(default) or "all") if isinstance(default, tuple) else "none" if default is None else default
        helptext = f"{docs.get(f.name, '')} (default: {shown})".replace("%", "%%")
        if typing.get_origin(hint) is Literal:
            parser.add_argument(flag, choices=typing.get_args(hint), default=default, help=helptext)
        elif typing.get_origin(hint) is tuple:
            parser.add_argument(flag, type=lambda s: tuple(p for p in s.split(",") if p), default=default,
                                help=helptext, metavar="A,B")
        elif hint == int | None:
            parser.add_argument(flag, type=_int_or_none, default=default, help=helptext, metavar="N|none")
        elif hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=helptext)
        elif hint in (int, float, str):
            parser.add_argument(flag, type=hint, default=default, help=helptext)
        else:  # pragma: no cover - guards against adding a field of a type the CLI cannot parse
            raise TypeError(f"no CLI parser for {cls.__name__}.{f.name}: {hint}")


def _int_or_none(s: str) -> int | None:
    return None if s.lower() in ("none", "all") else int(s)


def _field_docs(cls: type) -> dict[str, str]:
    """Field docstrings (the string literal right after each field) from the class source."""
    import inspect

    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): " ".join(m.group(2).split())
            for m in re.finditer(r'^\s+(\w+): [^\n]+\n\s+"""(.*?)"""', src, re.S | re.M)}


def synth_main(argv: list[str]) -> int:
    """``ivtlr data synth --out DIR --n-train N --n-test M --seed S [knobs]``: generate and save the benchmark.

    Returns 0 on success; bad arguments exit through argparse (SystemExit(2) with a one-line reason)."""
    parser = argparse.ArgumentParser(
        prog="ivtlr data synth",
        description="Generate the synthetic dot-chain / arrow-grid benchmark (M3CoT schema) and save it with "
                    "save_to_disk.")
    parser.add_argument("--out", required=True, help="output directory (load it with datasets.load_from_disk)")
    parser.add_argument("--n-train", type=int, default=5000, help="train examples (default: 5000)")
    parser.add_argument("--n-test", type=int, default=500, help="test examples (default: 500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_config_flags(parser, SynthConfig)
    args = vars(parser.parse_args(argv))
    out, n_train, n_test, seed = args.pop("out"), args.pop("n_train"), args.pop("n_test"), args.pop("seed")
    try:
        dd = generate(out, n_train, n_test, seed, **args)
    except ValueError as e:
        parser.error(str(e))
    cfg = json.loads((Path(out) / "synth_config.json").read_text())
    print(f"wrote {out}: train {len(dd['train'])}, test {len(dd['test'])} "
          f"({cfg['family']}, {cfg['grid']}x{cfg['grid']} grid, {cfg['image_size']} px, hops {cfg['hops']}, kinds {','.join(cfg['kinds'])})")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Documentation examples

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


if __name__ == "__main__":
    # python -m ivtlr.data.synth update-docs [docs/synthetic-task.md]   (re-render the documentation examples)
    # python -m ivtlr.data.synth --out DIR ...                           (same as `ivtlr data synth`)
    if sys.argv[1:2] == ["update-docs"]:
        update_docs(*sys.argv[2:3])
        raise SystemExit(0)
    raise SystemExit(synth_main(sys.argv[1:]))
