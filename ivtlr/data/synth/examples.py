"""``make_example``: question ``index`` of a split, a pure function of (config, seed, split, index)."""

from __future__ import annotations

import random

from .arrows import _make_arrow_example
from .chain import _balanced
from .config import FAMILIES, SynthConfig
from .dots import _make_dot_example
from .scene import Example


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
    return _make_arrow_example(cfg, rng, kind, letter)
