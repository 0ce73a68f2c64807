"""``ivtlr train CONFIG.yaml [--section.key value ...]``: train the progressive latent curriculum."""

from __future__ import annotations

import argparse

from ..cliargs import add_dataclass_flags, dataclass_from_args
from ..config import TrainConfig
from ..train import Trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ivtlr train", description="Train IVT-LR's progressive curriculum.")
    parser.add_argument("config", nargs="?", help="YAML config (sections: " + ", ".join(TrainConfig.SECTIONS) + ")")
    base = TrainConfig()
    for section in TrainConfig.SECTIONS:
        add_dataclass_flags(parser, type(getattr(base, section)), prefix=section)
    args = parser.parse_args(argv)
    cfg = TrainConfig.load(args.config) if args.config else base
    for section in TrainConfig.SECTIONS:
        setattr(cfg, section, dataclass_from_args(args, type(getattr(cfg, section)), section, getattr(cfg, section)))
    try:
        Trainer(cfg).run()
    finally:  # a clean exit of every rank (a live gloo group at interpreter exit can abort the process)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0
