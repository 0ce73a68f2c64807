"""The dot-chain family (the default): every cell's dot names another cell's fill, and its questions."""

from __future__ import annotations

import random

from .chain import _article, _place_choices
from .config import LETTERS, START_COLOUR, SynthConfig, _TIMES
from .scene import Example, Scene, solve


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

    # Text. Step 1 reads the white cell, step 2 the cells on the way, step 3 the reached cell (and the board);
    # with step_per_read the cells on the way get a sentence each (so a step of the split rationale is one read).
    between = ". " if cfg.step_per_read else ", then "
    if cfg.step_style == "pairs":
        def has(c: int) -> str:
            return f"{fills[c]} {dots[c]}, the {fills[c]} cell has {_article(dots[c])} {dots[c]} dot"

        step1, step2, step3 = has(path[0]), between.join(has(c) for c in path[1:-1]), has(end)
    elif cfg.step_style in ("content_first", "content_goto"):
        def has(c: int, goto: bool = True) -> str:
            text = f"{dots[c]} dot in the {fills[c]} cell"
            return text + f", so go to the {dots[c]} cell" if goto and cfg.step_style == "content_goto" else text

        step1, step2, step3 = has(path[0]), between.join(has(c) for c in path[1:-1]), has(end, goto=False)
    else:
        def has(c: int) -> str:
            return f"The {fills[c]} cell has {_article(dots[c])} {dots[c]} dot"

        step1, step3 = has(path[0]), has(end)
        step2 = (between.join(has(c) for c in path[1:-1]) if cfg.step_per_read
                 else "The " + ", then the ".join(has(c)[4:] for c in path[1:-1]))

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
