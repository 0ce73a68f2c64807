"""Command-line flags derived from typed config dataclasses (never a hand-copied ladder of overrides).

Each field becomes ``--prefix.field`` (or ``--field`` without a prefix); its docstring-style help comes from
the field's ``metadata["help"]`` or the class's attribute docstrings; ``Literal`` fields get ``choices`` and
booleans get ``--x/--no-x`` (argparse's ``type=bool`` would read "False" as True).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import typing
from typing import Any, Literal, get_args, get_origin


def field_docs(cls) -> dict[str, str]:
    """The docstring under each field of a dataclass (``x: int = 1`` followed by a string literal)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    docs, body = {}, tree.body[0].body
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _flag_kwargs(tp, default) -> dict[str, Any]:
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        return {"type": type(choices[0]), "choices": choices}
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            return _flag_kwargs(inner[0], default)
        return {"type": str}
    if origin in (list, tuple):
        inner = get_args(tp)[0] if get_args(tp) else str
        return {"type": inner, "nargs": "+"}
    if tp in (int, float, str):
        return {"type": tp}
    return {"type": str}


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, prefix: str = "") -> None:
    """Add one flag per field of dataclass ``cls``; defaults stay None so unset flags keep the config's value."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(prefix or cls.__name__)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        name = f"--{prefix}.{f.name}" if prefix else f"--{f.name.replace('_', '-')}"
        kwargs = _flag_kwargs(hints[f.name], default)
        group.add_argument(name, dest=f"{prefix}.{f.name}" if prefix else f.name, default=None,
                           help=f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%"),  # argparse formats
                           **kwargs)


def overrides_from_args(ns: argparse.Namespace, cls, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line."""
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(ns, f"{prefix}.{f.name}" if prefix else f.name, None)
        if value is not None:
            out[f.name] = value
    return out


def dataclass_from_args(ns: argparse.Namespace, cls, prefix: str = "", base=None):
    """Build ``cls`` from ``base`` (or its defaults) with the command-line overrides applied (validated)."""
    over = overrides_from_args(ns, cls, prefix)
    return dataclasses.replace(base, **over) if base is not None else cls(**over)
