"""``ivtlr data synth --out DIR --n-train N --n-test M --seed S [knobs]``: generate a dataset."""

from __future__ import annotations

from ..data.synth import synth_main


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "synth":
        print("usage: ivtlr data synth --out DIR --n-train N --n-test M --seed S [difficulty flags]")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return synth_main(argv[1:])
