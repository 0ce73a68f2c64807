"""The ``ivtlr`` command: one module per verb in this package, apart from the library they wire together.

Each verb's module is imported only when the verb runs, so ``ivtlr --help`` is instant.

Errors: an expected error (bad input, a missing or unreadable file, a bad config or checkpoint: ``ValueError``,
``OSError``, a YAML or safetensors error, or ``SystemExit`` with a message) prints one line,
``ivtlr VERB: error: ...``, and exits with status 2. ``--debug`` (anywhere on the line) or ``IVTLR_DEBUG=1``
shows the traceback instead. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

# verb -> (module, one-line help); each module has ``main(argv) -> int``
VERBS = {
    "demo": ("ivtlr.commands.demo", "the paper's tables in miniature on a CPU (data, training, every mode, report)"),
    "bench": ("ivtlr.commands.bench", "time the latent engine against plain generate"),
    "smoke": ("ivtlr.commands.smoke", "run the engine end to end on a tiny random model"),
    "train": ("ivtlr.commands.train", "train the progressive latent curriculum"),
    "data": ("ivtlr.commands.data", "datasets: `ivtlr data synth --out DIR ...`"),
    "eval": ("ivtlr.commands.eval", "evaluate a checkpoint (accuracy, AR steps, time per question)"),
    "infer": ("ivtlr.commands.infer", "answer questions about images; show each latent step's patches"),
    "analyze": ("ivtlr.commands.analyze", "diagnostics of the latent steps: selections, probes, interventions"),
    "explain": ("ivtlr.commands.explain", "pictures of each latent step's patches: a PNG per question, an HTML gallery"),
    "serve": ("ivtlr.commands.serve", "a web page for a checkpoint: upload an image, ask, see each step's patches"),
    "experiments": ("ivtlr.commands.experiments", "the measured experiments of docs/latent-reasoning.md"),
    "report": ("ivtlr.commands.report", "rebuild a demo's report from its results.json (optionally publish to docs)"),
    "score": ("ivtlr.commands.score", "score a predictions JSONL (M3CoT custom format)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in VERBS:
        print("usage: ivtlr VERB [options]\n\nverbs:")
        for verb, (_, help_) in VERBS.items():
            print(f"  {verb:<11} {help_}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown verb: {argv[0]}", file=sys.stderr)
            return 2
        return 0
    verb, args = argv[0], argv[1:]
    debug = "--debug" in args or os.environ.get("IVTLR_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        return int(importlib.import_module(VERBS[verb][0]).main(args) or 0)
    except SystemExit as err:
        if not isinstance(err.code, str):
            raise
        return _fail(verb, err.code)
    except expected_errors() as err:
        if debug:
            raise
        return _fail(verb, describe(err))


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean bad input or a bad file, not a bug in ivtlr."""
    import yaml
    from safetensors import SafetensorError

    return ValueError, OSError, yaml.YAMLError, SafetensorError, UnicodeError


def describe(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.strerror}: {err.filename}"
    text = str(err).strip() or type(err).__name__
    return text if isinstance(err, ValueError) or ": " in text else f"{type(err).__name__}: {text}"


def _fail(verb: str, message: str) -> int:
    message = message.removeprefix(f"ivtlr {verb}: ").removeprefix("error: ")
    print(f"ivtlr {verb}: error: {message}", file=sys.stderr)
    return 2
