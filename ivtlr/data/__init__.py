"""Datasets: the synthetic visual multi-step benchmark (dot chains by default, arrow grids as an option) (``synth``) in M3CoT's schema.

Attributes are imported lazily, so ``import ivtlr.data`` stays cheap and ``python -m ivtlr.data.synth`` runs cleanly.
"""

__all__ = ["SynthConfig", "generate", "synth_main", "make_example", "render", "solve", "m3cot_features",
           "text_corpus", "render_examples"]


def __getattr__(name):
    if name in __all__:
        from . import synth

        return getattr(synth, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
