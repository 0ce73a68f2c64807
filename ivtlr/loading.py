"""Loading a trained model for inference: this project's checkpoints and the authors' ``.pth`` files.

``load_model(path)`` returns the model, its tokenizer and the run's TrainConfig, whatever produced the file:
- a checkpoint folder of ``ivtlr train`` (full weights of a tiny model, or a LoRA adapter over a pretrained
  base named in its config);
- an authors' checkpoint (``.pth``/``.safetensors`` of their IVTLR wrapper), with ``base`` giving the model
  config and tokenizer (hub id or local path, e.g. ``Qwen/Qwen2-VL-7B-Instruct``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import read_meta
from .config import TrainConfig


def load_model(path: str | Path, base: str | None = None, backbone: str = "qwen2-vl", trainable: bool = False):
    """(model in eval mode, tokenizer, TrainConfig). Raises FileNotFoundError / CheckpointError with the path.

    ``trainable``: a LoRA checkpoint's adapter stays trainable (to continue training from it)."""
    path = Path(path)
    if path.is_file():
        return _load_authors(path, base, backbone)
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint at {path}")
    meta = read_meta(path)
    cfg = TrainConfig.load(path / "config.yaml")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
    if meta["kind"] == "full":
        from safetensors.torch import load_model as load_weights
        from transformers import AutoConfig, AutoModelForImageTextToText

        config = AutoConfig.from_pretrained(path / "model")
        model = AutoModelForImageTextToText.from_config(config)
        missing, unexpected = load_weights(model, str(path / "model" / "model.safetensors"), strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: weights do not fit: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
        if config.model_type == "chameleon":  # discrete codes: no gradient ever reaches the VQ image tokenizer
            model.model.vqmodel.requires_grad_(False)
    else:
        from peft import PeftModel

        from .setup import build_pretrained

        base_cfg = cfg.model
        base_model = build_pretrained(type(base_cfg)(**{**vars(base_cfg), "lora": False}), tokenizer, torch.float32,
                                      log=lambda m: None)
        model = PeftModel.from_pretrained(base_model, path / "model", is_trainable=trainable)
    return model.eval(), tokenizer, cfg


def _load_authors(path: Path, base: str | None, backbone: str):
    if base is None:
        raise ValueError(f"{path} is an authors' checkpoint file: pass the base model (hub id or local path) for "
                         "its config and tokenizer, e.g. --base Qwen/Qwen2-VL-7B-Instruct")
    from .compat import load_authors_checkpoint
    from .tokenizer import load_tokenizer

    model = load_authors_checkpoint(path, base)
    tokenizer = load_tokenizer(base)
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise ValueError(f"{path}: its vocabulary ({vocab}) is smaller than the tokenizer of {base} with the latent "
                         f"tokens ({len(tokenizer)}): wrong base model?")
    cfg = TrainConfig()
    cfg.model.backbone = backbone
    cfg.model.name_or_path = base
    return model.eval(), tokenizer, cfg
