"""Backbones: one small adapter per model family, all behind ``ivtlr.backbones.base.Backbone``."""

from __future__ import annotations

from torch import nn

from .base import Backbone, TokenIds, unwrap_peft
from .chameleon import ChameleonBackbone
from .qwen2vl import Qwen25VLBackbone, Qwen2VLBackbone

#: backbone name -> adapter class
BACKBONES: dict[str, type[Backbone]] = {
    cls.name: cls for cls in (Qwen2VLBackbone, Qwen25VLBackbone, ChameleonBackbone)
}
#: transformers ``model_type`` -> backbone name
MODEL_TYPES = {"qwen2_vl": "qwen2-vl", "qwen2_5_vl": "qwen2.5-vl", "chameleon": "chameleon"}


def backbone_for(model: nn.Module, tokens: TokenIds) -> Backbone:
    """The adapter for a (possibly PEFT-wrapped) transformers model, chosen by its ``config.model_type``."""
    model_type = unwrap_peft(model).config.model_type
    if model_type not in MODEL_TYPES:
        raise ValueError(f"no IVT-LR backbone for model type '{model_type}' (supported: {sorted(MODEL_TYPES)})")
    return BACKBONES[MODEL_TYPES[model_type]](model, tokens)


__all__ = ["BACKBONES", "MODEL_TYPES", "Backbone", "TokenIds", "backbone_for", "unwrap_peft"]
