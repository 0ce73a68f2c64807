"""The ``ivtlr`` command: thin verbs that wire the package's parts together.

Each verb imports its module only when called, so ``ivtlr --help`` is instant.
"""

from __future__ import annotations

import importlib
import sys

# verb -> (module, function taking argv, one-line help)
VERBS = {
    "bench": ("ivtlr.bench", "main", "time the latent engine against plain generate"),
    "smoke": ("ivtlr.smoke", "main", "run the engine end to end on a tiny random model"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in VERBS:
        print("usage: ivtlr VERB [options]\n\nverbs:")
        for verb, (_, _, help_) in VERBS.items():
            print(f"  {verb:<8} {help_}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown verb: {argv[0]}", file=sys.stderr)
            return 2
        return 0
    module, func, _ = VERBS[argv[0]]
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
