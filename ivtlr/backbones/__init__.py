"""Backbones: one module per model family, each class behind ``ivtlr.backbones.base.Backbone``.

A family's module holds everything the project knows about it (the engine adapter, the prompt encoder, the
special token ids, the LoRA targets, the tiny from-scratch model); this registry finds it by name (a run's
``model.backbone``) or by the transformers ``config.model_type`` of a loaded model. To add a family: write
``ivtlr/backbones/<family>.py`` with a ``Backbone`` subclass and add the class to ``FAMILIES`` below
(docs/architecture.md lists the steps).
"""

from __future__ import annotations

from torch import nn

from .base import Backbone, PromptEncoder, TokenIds, unwrap_peft
from .chameleon import ChameleonBackbone
from .qwen2vl import Qwen25VLBackbone, Qwen2VLBackbone

FAMILIES: tuple[type[Backbone], ...] = (Qwen2VLBackbone, Qwen25VLBackbone, ChameleonBackbone)
#: backbone name -> adapter class
BACKBONES: dict[str, type[Backbone]] = {cls.name: cls for cls in FAMILIES}
#: transformers ``model_type`` -> backbone name
MODEL_TYPES: dict[str, str] = {mt: cls.name for cls in FAMILIES for mt in cls.model_types}


def family(name: str) -> type[Backbone]:
    """The backbone class registered as ``name`` (e.g. "qwen2-vl"). Raises ValueError naming the known ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r} (known: {', '.join(BACKBONES)})")
    return BACKBONES[name]


def family_of_model_type(model_type: str) -> type[Backbone]:
    """The backbone class serving a transformers ``config.model_type`` (e.g. "chameleon")."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"no IVT-LR backbone for model type '{model_type}' (supported: {sorted(MODEL_TYPES)})")
    return BACKBONES[MODEL_TYPES[model_type]]


def family_of(model: nn.Module) -> type[Backbone]:
    """The backbone class of a (possibly PEFT-wrapped) transformers model, from its own ``config.model_type``."""
    return family_of_model_type(unwrap_peft(model).config.model_type)


def backbone_for(model: nn.Module, tokens: TokenIds) -> Backbone:
    """The adapter for a (possibly PEFT-wrapped) transformers model, chosen by its ``config.model_type``."""
    return family_of(model)(model, tokens)


__all__ = ["BACKBONES", "FAMILIES", "MODEL_TYPES", "Backbone", "PromptEncoder", "TokenIds", "backbone_for",
           "family", "family_of", "family_of_model_type", "unwrap_peft"]
