"""Palettes, the benchmark's constants and ``SynthConfig`` (its difficulty knobs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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
    answer_lead: bool = False
    """The answer line opens with the answer's content: "blue. Therefore, the answer is F" instead of "Therefore,
    the answer is F" (the synth task reads this from the data's ``synth_config.json``). With "pairs" steps every
    step boundary then predicts what the step before it read, the answer's boundary too: the state after the
    last latent step is trained, like every other, to carry the last read (measured in docs/latent-reasoning.md:
    without it, the final latent stage has no target for that state and learns by a late jump or not at all)."""
    step_per_read: bool = False
    """Dots family: one rationale sentence per read (hops + 1 steps), which the synth task keeps as separate
    steps (the synth task reads this from the data's ``synth_config.json``). By default, as the authors' data
    processing (at most 3 steps), the middle step reads every cell on the way: with hops > 2 one step (and so one
    latent step) then does several reads. With hops = 2 both give the same rationale."""
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
        if self.step_per_read and not dots:
            raise ValueError("step_per_read is defined for the dots family only")
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
