"""Everything inference needs, built once from a checkpoint: the engine, the prompt encoder, the task, the config.

``load_inference(path)`` takes an ivtlr run checkpoint (or an authors' ``.pth`` with ``base``) and wires
``load_model`` -> token ids -> backbone -> ``LatentEngine`` -> prompt encoder in one place, so that evaluation,
inference, the demo and the analysis cannot wire them differently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from .backbones import backbone_for
from .config import TrainConfig
from .engine import LatentConfig, LatentEngine


@dataclass
class Inference:
    """A loaded checkpoint ready to answer: ``engine.generate`` on batches the ``encoder`` builds for ``task``."""

    engine: LatentEngine
    encoder: object
    task: object
    config: TrainConfig
    tokenizer: object
    path: Path

    @property
    def tokens(self):
        return self.engine.backbone.tokens

    def with_latent(self, **overrides) -> "Inference":
        """The same model under other latent options (ablations): a new engine over the same backbone."""
        latent = dataclasses.replace(self.engine.config, **overrides)
        return dataclasses.replace(self, engine=LatentEngine(self.engine.backbone, latent))


def load_inference(path: str | Path, base: str | None = None, task: str | None = None,
                   prompt_style: str | None = None, latent: LatentConfig | None = None,
                   device: torch.device | str | None = None) -> Inference:
    """Load ``path`` for inference.

    Args:
        path: an ivtlr checkpoint folder, or an authors' checkpoint file (then ``base`` names the base model).
        task, prompt_style: override the run's task and prompt style.
        latent: the latent options (default: the run's).
        device: where to put the model (default: CUDA if available, else the CPU).
    Raises:
        FileNotFoundError / ValueError naming the path for a missing or unreadable checkpoint.
    """
    from .loading import load_model
    from .setup import prompt_encoder, token_ids
    from .tasks import get_task

    model, tokenizer, cfg = load_model(path, base)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    engine = LatentEngine(backbone_for(model, token_ids(tokenizer, cfg.model.backbone)), latent or cfg.latent)
    encoder = prompt_encoder(cfg.model.backbone, tokenizer, cfg.model.image_size)
    the_task = get_task(task or cfg.data.task, prompt_style=prompt_style or cfg.data.prompt_style)
    return Inference(engine, encoder, the_task, cfg, tokenizer, Path(path))
