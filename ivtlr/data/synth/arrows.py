"""The arrow-grid family: boards with arrows pointing at neighbours, and its questions."""

from __future__ import annotations

import random

from .chain import _article, _in_board_directions, _place_choices, _sample_path
from .config import DIRECTIONS, LETTERS, START_COLOUR, SynthConfig
from .scene import Example, Scene, solve


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


def _make_arrow_example(cfg: SynthConfig, rng: random.Random, kind: str, letter: int) -> Example:
    """One arrow-grid question of ``kind`` with its answer at option ``letter``."""
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
