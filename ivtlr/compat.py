"""Loading checkpoints saved by the authors' IVT-LR code into a transformers 5.x model.

The authors save ``state_dict()`` of their ``IVTLR`` wrapper (``.pth``; the released 7B checkpoints have the
same layout): keys under ``base_causallm.`` (optionally ``module.`` in front, from DeepSpeed/DDP), a PEFT LoRA
model inside (``base_model.model.`` ...), transformers-4.51 module names, and ``embedding.weight``, an alias of
the token embedding table. This module maps those keys to the 5.x names and loads them strictly: a key that
is missing or left over is an error naming the file, never a silently half-loaded model.

Only ``torch.load(weights_only=True)`` and safetensors are used: a checkpoint cannot run code on load.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from .backbones import family_of_model_type

# 4.51 -> 5.x renames per model type, applied after the wrapper prefixes are stripped. Patterns are anchored
# on the PEFT prefix (``base_model.model.``) or nothing (a checkpoint saved without LoRA).
_RENAMES: dict[str, list[tuple[str, str]]] = {
    "qwen2_vl": [
        (r"^((?:base_model\.model\.)?)model\.(embed_tokens|layers|norm)\.", r"\1model.language_model.\2."),
        (r"^((?:base_model\.model\.)?)visual\.", r"\1model.visual."),
    ],
    "qwen2_5_vl": [
        (r"^((?:base_model\.model\.)?)model\.(embed_tokens|layers|norm)\.", r"\1model.language_model.\2."),
        (r"^((?:base_model\.model\.)?)visual\.", r"\1model.visual."),
    ],
    "chameleon": [],  # module names unchanged between 4.51 and 5.x
}


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model it is loaded into."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.pt``/``.bin`` (``weights_only=True``) or ``.safetensors`` file into a dict of tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle with code, or a corrupt file
        raise CheckpointError(f"{path}: cannot be read as a plain tensor state dict ({err})") from err
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state_dict)")
    return sd


def remap_authors_keys(state_dict: dict[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """Map the authors' wrapper keys (transformers 4.51) to this project's model keys (transformers 5.x).

    Drops ``embedding.weight`` (an alias of ``embed_tokens``), strips ``module.`` and ``base_causallm.``, then
    applies the per-model renames. Raises CheckpointError for an unknown model type.
    """
    if model_type not in _RENAMES:
        raise CheckpointError(f"no key mapping for model type '{model_type}' (known: {sorted(_RENAMES)})")
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^module\.", "", key)
        if key == "embedding.weight":
            continue
        key = re.sub(r"^base_causallm\.", "", key)
        for pattern, repl in _RENAMES[model_type]:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def is_peft_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(".lora_A." in k for k in state_dict)


def lora_rank(state_dict: dict[str, torch.Tensor]) -> int | None:
    """The LoRA rank stored in a state dict (rows of any ``lora_A`` weight), or None without LoRA."""
    for key, value in state_dict.items():
        if ".lora_A." in key:
            return int(value.shape[0])
    return None


def load_authors_state_dict(model: nn.Module, path: str | Path, model_type: str) -> None:
    """Load an authors' checkpoint into ``model`` (a PEFT model if the checkpoint has LoRA), strictly.

    Raises CheckpointError naming the file and the first offending keys when keys are missing, unexpected,
    or of the wrong shape (e.g. a Chameleon checkpoint into a Qwen2-VL model, or a different LoRA rank).
    """
    sd = remap_authors_keys(read_state_dict(path), model_type)
    _check_keys(model.state_dict(), sd, path, model_type)
    model.load_state_dict(sd, strict=True)


def _check_keys(own: dict, sd: dict, path, model_type: str) -> None:
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
    if not (missing or unexpected or wrong):
        return

    def head(keys):
        return ", ".join(keys[:3]) + (f" ... ({len(keys)} in all)" if len(keys) > 3 else "")

    parts = []
    if missing:
        parts.append(f"missing {head(missing)}")
    if unexpected:
        parts.append(f"unexpected {head(unexpected)}")
    if wrong:
        parts.append("shape mismatch " + ", ".join(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:3]))
    raise CheckpointError(f"{path} does not fit a '{model_type}' model: " + "; ".join(parts))


# --------------------------------------------------------------------------------------- whole models
def load_authors_checkpoint(
    checkpoint: str | Path,
    config_source: str | Path,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Build a model from a config and load an authors' checkpoint into it (LoRA kept as a PEFT adapter).

    Args:
        checkpoint: the ``.pth``/``.safetensors`` state dict saved by the authors' wrapper (it holds every
            weight, so the base weights are never loaded: only the config is read).
        config_source: where the model config comes from: a hub id (``Qwen/Qwen2-VL-7B-Instruct``) or a local
            folder with ``config.json`` (e.g. a fixture in the authors' 4.51 layout).
        lora_alpha, lora_dropout: not stored in the state dict; defaults are the authors'. The rank is read
            from the checkpoint.
    Returns:
        the model in eval mode (a ``PeftModel`` when the checkpoint has LoRA weights).
    Raises:
        CheckpointError when the checkpoint does not fit the config (model type, sizes, missing keys).
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(config_source)
    raw = read_state_dict(checkpoint)
    model_type = config.model_type
    sd = remap_authors_keys(raw, model_type)
    emb = next((v for k, v in sd.items() if k.endswith("embed_tokens.weight") or k.endswith("embed_tokens.base_layer.weight")), None)
    if emb is None:
        raise CheckpointError(f"{checkpoint}: no token embedding table found; is it an IVT-LR checkpoint?")
    text_config = config.get_text_config()
    if text_config.vocab_size != emb.shape[0]:  # the latent tokens were added: vocabulary grows
        text_config.vocab_size = emb.shape[0]
        config.vocab_size = emb.shape[0]
    from accelerate import init_empty_weights

    # parameters on the meta device (no random init of 7B weights), buffers (rotary tables) computed for real
    with init_empty_weights(include_buffers=False):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    rank = lora_rank(sd)
    if rank is not None:
        from peft import get_peft_model

        model = get_peft_model(model, family_of_model_type(model_type).lora_config(rank, lora_alpha, lora_dropout))
    own = model.state_dict()
    _check_keys(own, sd, checkpoint, model_type)
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return model.eval()
