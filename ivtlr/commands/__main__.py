"""``python -m ivtlr.commands VERB ...`` (what ``torchrun``/``accelerate launch -m`` run), same as ``ivtlr VERB``."""

from . import main

raise SystemExit(main())
