"""Backbones: one module per model family, each class behind ``ivtlr.backbones.base.Backbone``.

A family's module holds everything the project knows about it (the engine adapter, the prompt encoder, the
special token ids, the LoRA targets, the tiny from-scratch model); this registry finds it by name (a run's
``model.backbone``) or by the transformers ``config.model_type`` of a loaded model. To add a family: write
``ivtlr/backbones/<family>.py`` with a ``Backbone`` subclass and add the class to ``FAMILIES`` below
(docs/architecture.md lists the steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .base import Backbone, PromptEncoder, TokenIds, unwrap_peft
from .chameleon import ChameleonBackbone, chameleon_7b_config
from .qwen2vl import QWEN_7B_IDS, Qwen25VLBackbone, Qwen2VLBackbone, qwen25vl_7b_config, qwen2vl_7b_config

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


@dataclass(frozen=True)
class Preset:
    """A released model's architecture, built from its published config values (no weights are downloaded)."""

    name: str
    family: type[Backbone]
    config: Callable  # config(layers=None, attn_implementation="sdpa") -> a transformers config
    published_params: float  # the model card's parameter count
    hub_id: str  # where the config values come from


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("qwen2-vl-7b", Qwen2VLBackbone, qwen2vl_7b_config, 8.29e9, "Qwen/Qwen2-VL-7B-Instruct"),
    Preset("qwen2.5-vl-7b", Qwen25VLBackbone, qwen25vl_7b_config, 8.29e9, "Qwen/Qwen2.5-VL-7B-Instruct"),
    Preset("chameleon-7b", ChameleonBackbone, chameleon_7b_config, 7.04e9, "facebook/chameleon-7b"),
)}


def build_preset(name: str, layers: int | None = None, device: str | torch.device = "meta",
                 dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """A preset's model with random weights (seeded), or on the meta device (no memory: for counting).

    ``layers`` cuts the language model to that many decoder layers (same width, vision tower and vocabulary), so
    the real architecture runs on a small machine."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    from transformers import AutoModelForImageTextToText

    config = PRESETS[name].config(layers)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        with torch.device(device):
            model = AutoModelForImageTextToText.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


__all__ = ["BACKBONES", "PRESETS", "Preset", "QWEN_7B_IDS", "build_preset", "FAMILIES", "MODEL_TYPES", "Backbone", "PromptEncoder", "TokenIds", "backbone_for",
           "family", "family_of", "family_of_model_type", "unwrap_peft"]
