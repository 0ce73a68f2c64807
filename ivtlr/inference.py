"""The one inference path: everything answering needs, built once from a checkpoint.

``load_inference(path)`` takes an ivtlr checkpoint folder, or an authors' ``.pth`` with ``base`` (a hub id or a
local path), and wires model -> token ids -> backbone -> ``LatentEngine`` -> prompt encoder -> task in one place,
so that ``eval``, ``infer``, ``analyze`` and the demo cannot wire them differently. The backbone family comes from
the model's own ``config.model_type``; device and dtype from ``ivtlr.placement``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .backbones import Backbone
from .config import TrainConfig
from .engine import LatentConfig, LatentEngine
from .models import load_model
from .placement import Placement
from .tasks import get_task


@dataclass
class Inference:
    """A loaded checkpoint ready to answer: ``engine.generate`` on batches the ``encoder`` builds for ``task``."""

    engine: LatentEngine
    encoder: object
    task: object
    config: TrainConfig
    tokenizer: object
    path: Path
    family: type[Backbone]
    placement: Placement

    @property
    def tokens(self):
        return self.engine.backbone.tokens

    def with_latent(self, **overrides) -> "Inference":
        """The same model under other latent options (ablations): a new engine over the same backbone."""
        latent = dataclasses.replace(self.engine.config, **overrides)
        return dataclasses.replace(self, engine=LatentEngine(self.engine.backbone, latent))


def load_inference(path: str | Path, base: str | None = None, task: str | None = None,
                   prompt_style: str | None = None, latent: LatentConfig | None = None,
                   device: torch.device | str | None = None, dtype: str = "auto",
                   log: Callable[[str], None] = lambda m: None) -> Inference:
    """Load ``path`` for inference.

    Args:
        path: an ivtlr checkpoint folder, or an authors' checkpoint file (then ``base`` names the base model).
        task, prompt_style: override the run's task and prompt style.
        latent: the latent options (default: the run's).
        device, dtype: as ``ivtlr.placement.place`` (default: its policy).
        log: receives one line naming the backbone, the device, the dtype and why.
    Raises:
        FileNotFoundError / ValueError naming the path for a missing, unreadable or mismatched checkpoint.
    """
    loaded = load_model(path, base, dtype=dtype, device=device, log=log)
    fam, cfg = loaded.family, loaded.config
    engine = LatentEngine(fam(loaded.model, fam.token_ids(loaded.tokenizer)), latent or cfg.latent)
    encoder = fam.prompt_encoder(loaded.tokenizer, cfg.model.image_size)
    the_task = get_task(task or cfg.data.task, prompt_style=prompt_style or cfg.data.prompt_style)
    return Inference(engine, encoder, the_task, cfg, loaded.tokenizer, Path(path), fam, loaded.placement)
