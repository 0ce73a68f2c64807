"""The dataset on disk, in M3CoT's schema (``generate``), and the text corpus of tiny tokenizers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator

from .config import DOMAIN, SPLITS, SynthConfig
from .examples import make_example
from .render import _png_bytes, render
from .scene import Example


CONFIG_FILE = "synth_config.json"
"""What ``generate`` writes beside the splits: the seed, the sizes and every SynthConfig field."""


def read_config(data_dir: str | Path) -> dict:
    """The generator's ``CONFIG_FILE`` in `data_dir` ({} for data without one, e.g. older directories).
    Errors: ValueError naming the file when it is not a JSON object."""
    path = Path(data_dir).expanduser() / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"synth: {path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"synth: {path} must hold a JSON object, got {type(config).__name__}")
    return config


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


def generate(out_dir: str | Path | None, n_train: int, n_test: int, seed: int = 0, n_val: int = 0, **difficulty):
    """Generate the benchmark and save it with ``DatasetDict.save_to_disk``.

    Args:
        out_dir: where to save (the splits plus ``synth_config.json``); None only builds it in memory.
        n_train, n_test: split sizes (>= 1).
        seed: the same seed and knobs give byte-identical data.
        n_val: size of a "validation" split (0: none), drawn from its own stream like M3CoT's validation split:
            for model selection during training, never the test questions.
        **difficulty: SynthConfig fields (family, grid, cell, image_size, n_colors, hops, distractors, n_choices,
            kinds).
    Returns:
        ``datasets.DatasetDict`` with splits "train" and "test" (and "validation" when n_val > 0) in M3CoT's
        Features.
    Raises:
        ValueError: bad sizes or knobs; TypeError: an unknown knob.
    """
    from datasets import Dataset, DatasetDict

    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    if isinstance(n_val, bool) or not isinstance(n_val, int) or n_val < 0:
        raise ValueError(f"n_val must be an integer >= 0, got {n_val!r}")
    known = {f.name for f in dataclasses.fields(SynthConfig)}
    if unknown := sorted(set(difficulty) - known):
        raise TypeError(f"unknown difficulty knob(s) {unknown}; expected some of {sorted(known)}")
    cfg = SynthConfig(**difficulty)
    features = m3cot_features()
    splits = {}
    sizes = dict(zip(SPLITS, (n_train, n_test)), **({"validation": n_val} if n_val else {}))
    for split, n in sizes.items():
        rows = [to_record(make_example(cfg, seed, split, i), split, i, cfg) for i in range(n)]
        columns = {k: [r[k] for r in rows] for k in features}
        splits[split] = Dataset.from_dict(columns, features=features, split=split)
    dd = DatasetDict(splits)
    if out_dir is not None:
        out = Path(out_dir)
        dd.save_to_disk(str(out))
        resolved = {"seed": seed, "n_train": n_train, "n_test": n_test, "n_val": n_val, **dataclasses.asdict(cfg)}
        (out / CONFIG_FILE).write_text(json.dumps(resolved, indent=2) + "\n")
    return dd


def text_corpus(n: int = 2000, seed: int = 0, **difficulty) -> Iterator[str]:
    """Questions, option texts and rationales of n train examples (no images): tokenizer training text."""
    cfg = SynthConfig(**difficulty)
    for i in range(n):
        ex = make_example(cfg, seed, "train", i)
        yield ex.question
        yield from ex.choices
        yield ex.rationale
