"""What both families share: paths over the board, balanced draws, option placement."""

from __future__ import annotations

import random
from typing import Sequence

from .config import DIRECTIONS, _OFFSET


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
