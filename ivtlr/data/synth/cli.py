"""``ivtlr data synth``: the command line."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import typing
from pathlib import Path
from typing import Literal

from ...cliargs import field_docs
from .config import SynthConfig
from .writer import generate, read_config


def _add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One --flag per dataclass field, typed from its annotation, help from its docstring."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
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
    parser.add_argument("--n-val", type=int, default=0,
                        help="questions of a 'validation' split for model selection (default: 0, none)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace what --out holds (deleted first)")
    _add_config_flags(parser, SynthConfig)
    args = vars(parser.parse_args(argv))
    out, n_train, n_test, seed = args.pop("out"), args.pop("n_train"), args.pop("n_test"), args.pop("seed")
    overwrite, n_val = args.pop("overwrite"), args.pop("n_val")
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if n < 1:
            parser.error(f"{name} must be an integer >= 1, got {n}")
    if n_val < 0:
        parser.error(f"n_val must be an integer >= 0, got {n_val}")
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if not overwrite:
            raise ValueError(f"{out} is not empty; replace it with --overwrite (deletes it) or choose another --out")
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    try:
        dd = generate(out, n_train, n_test, seed, n_val=n_val, **args)
    except ValueError as e:
        parser.error(str(e))
    cfg = read_config(out)
    print(f"wrote {out}: train {len(dd['train'])}, test {len(dd['test'])}"
          + (f", validation {len(dd['validation'])}" if n_val else "") + " "
          f"({cfg['family']}, {cfg['grid']}x{cfg['grid']} grid, {cfg['image_size']} px, hops {cfg['hops']}, kinds {','.join(cfg['kinds'])})")
    return 0
