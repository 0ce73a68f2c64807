"""ivtlr: Interleaved Vision-Text Latent Reasoning (IVT-LR, arXiv 2510.12603) for vision-language models.

The package holds the method (``engine``), the model adapters (``backbones``), the benchmarks (``tasks``),
checkpoint compatibility with the authors' code (``compat``), the one inference path (``inference``) and the
commands (``commands``, one module per verb).
Importing it has no side effects: no downloads, no logging set-up.
"""

__version__ = "0.1.0"
