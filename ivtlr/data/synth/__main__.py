"""``python -m ivtlr.data.synth --out DIR ...`` (as ``ivtlr data synth``), or ``python -m ivtlr.data.synth update-docs
[docs/synthetic-task.md]`` (re-render the documentation's examples)."""

import sys

from .cli import synth_main
from .docs import update_docs

if sys.argv[1:2] == ["update-docs"]:
    update_docs(*sys.argv[2:3])
    raise SystemExit(0)
raise SystemExit(synth_main(sys.argv[1:]))
