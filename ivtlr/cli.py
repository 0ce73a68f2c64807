"""The ``ivtlr`` command: thin verbs that wire the package's parts together.

Each verb imports its module only when called, so ``ivtlr --help`` is instant.
"""

from __future__ import annotations

import importlib
import sys

# verb -> (module, function taking argv, one-line help)
VERBS = {
    "demo": ("ivtlr.demo", "main", "the paper's tables in miniature on a CPU (data, training, every mode, report)"),
    "bench": ("ivtlr.bench", "main", "time the latent engine against plain generate"),
    "smoke": ("ivtlr.smoke", "main", "run the engine end to end on a tiny random model"),
    "train": ("ivtlr.train", "main", "train the progressive latent curriculum"),
    "data": ("ivtlr.cli", "data_main", "datasets: `ivtlr data synth --out DIR ...`"),
    "eval": ("ivtlr.evaluate", "main", "evaluate a checkpoint (accuracy, AR steps, time per question)"),
    "infer": ("ivtlr.infer", "main", "answer questions about images; show each latent step's patches"),
    "analyze": ("ivtlr.analyze", "main", "diagnostics of the latent steps: selections, probes, interventions"),
    "experiments": ("ivtlr.experiments", "main", "the measured experiments of docs/latent-reasoning.md"),
    "score": ("ivtlr.tasks.scoring", "score_main", "score a predictions JSONL (M3CoT custom format)"),
}


def data_main(argv: list[str]) -> int:
    """``ivtlr data synth ...``: generate the synthetic benchmark."""
    if not argv or argv[0] != "synth":
        print("usage: ivtlr data synth --out DIR --n-train N --n-test M --seed S [difficulty flags]")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from .data.synth import synth_main

    return synth_main(argv[1:])


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
