"""Flags several commands share: which checkpoint to load, and where to run it."""

from __future__ import annotations

import argparse


def add_checkpoint_flags(p: argparse.ArgumentParser, required: bool = True, default_help: str = "") -> None:
    """``--checkpoint`` and ``--base`` (what ``ivtlr.inference.load_inference`` takes), ``--device``, ``--dtype``."""
    p.add_argument("--checkpoint", required=required,
                   help="an ivtlr checkpoint folder, or an authors' .pth with --base" + default_help)
    p.add_argument("--base", help="for an authors' .pth: the base model (hub id or path) for config and tokenizer")
    p.add_argument("--device", help="default: the first GPU, else the CPU")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="default: the project's policy (ivtlr.placement): bfloat16 on a GPU that supports it or "
                        "for pretrained weights, else float32")


def add_question_flags(p: argparse.ArgumentParser) -> None:
    """One question on the command line: ``--image``, ``--question``, ``--choices``."""
    p.add_argument("--image", help="one question: its image file")
    p.add_argument("--question", help="one question: its text")
    p.add_argument("--choices", nargs="+", help="one question: its options, in order (A, B, ...)")
