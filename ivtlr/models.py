"""Building and loading models: tiny from scratch, pretrained (hub id or local path, LoRA through PEFT), this
project's checkpoints and the authors' ``.pth`` files.

The backbone family always comes from the model's own ``config.model_type`` (``ivtlr.backbones.family_of``), never
from a default: an authors' Chameleon checkpoint gets Chameleon's token ids and prompt encoder. The dtype comes from
``ivtlr.placement``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterable

import torch

from .backbones import Backbone, family, family_of
from .checkpoint import load_weights, read_meta, verify_checkpoint
from .compat import load_authors_checkpoint
from .config import ModelConfig, TrainConfig
from .placement import Placement, place
from .tokenizer import load_tokenizer


def task_corpus(task, examples: Iterable) -> list[str]:
    """The task's own text, for a tiny model's tokenizer."""
    out = []
    for ex in examples:
        out.append(task.prompt(ex, "train"))
        out.append(task.prompt(ex, "infer"))
        out.extend(task.step_targets(ex))
        out.append(task.answer_text(ex))
    return out


def build_tiny(cfg: ModelConfig, corpus: Iterable[str], seed: int):
    """(model, tokenizer): a tiny model of ``cfg.backbone`` from scratch, with a tokenizer trained on ``corpus``."""
    fam = family(cfg.backbone)
    tokenizer = fam.build_tiny_tokenizer(cfg, corpus)
    return fam.build_tiny(cfg, tokenizer, seed), tokenizer


def tie_embeddings(model) -> None:
    """Make ``model``'s output head the same parameter as its input embeddings, which keep their values (an untied
    model's own head is dropped), and say so in its config, so that a checkpoint of it loads tied."""
    for config in (model.config, getattr(model.config, "text_config", None)):
        if config is not None and hasattr(config, "tie_word_embeddings"):
            config.tie_word_embeddings = True
    model.get_output_embeddings().weight = model.get_input_embeddings().weight


def build_pretrained(cfg: ModelConfig, tokenizer, dtype: torch.dtype, log: Callable[[str], None]):
    """A pretrained model with the latent tokens added (rows initialised from ``init_latent_from``) and LoRA."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(cfg.name_or_path, dtype=dtype)
    fam = family_of(model)
    if fam.name != cfg.backbone:
        log(f"{cfg.name_or_path} is a {model.config.model_type} model: backbone {fam.name} (not {cfg.backbone})")
    old = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old:
        model.resize_token_embeddings(len(tokenizer))
    src = tokenizer(cfg.init_latent_from, add_special_tokens=False)["input_ids"]
    if not src:
        raise ValueError(f"model.init_latent_from={cfg.init_latent_from!r} tokenizes to nothing")
    new = tokenizer.convert_tokens_to_ids(["<|start-latent|>", "<|end-latent|>", "<|latent|>"])
    with torch.no_grad():  # copy the source token's rows into the new tokens' rows (not a row onto itself)
        for table in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            for i in new:
                if i >= old:
                    table[i] = table[src[0]]
    log(f"latent tokens {new} initialised from {cfg.init_latent_from!r} (id {src[0]})")
    if cfg.lora:
        from peft import get_peft_model

        model = get_peft_model(model, fam.lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(f"LoRA r={cfg.lora_r} alpha={cfg.lora_alpha}: {trainable:,} trainable parameters (language model only)")
    return model


@dataclasses.dataclass
class Loaded:
    """A model read back for inference (or to continue training), with what it needs around it."""

    model: torch.nn.Module
    tokenizer: object
    config: TrainConfig
    family: type[Backbone]
    placement: Placement


def load_model(path: str | Path, base: str | None = None, dtype: str = "auto", device=None,
               trainable: bool = False, log: Callable[[str], None] = lambda m: None) -> Loaded:
    """Load a checkpoint, placed by ``ivtlr.placement``.

    Args:
        path: a checkpoint folder of ``ivtlr train`` (full weights of a tiny model, or a LoRA adapter over the
            pretrained base named in its config), or an authors' checkpoint file (``.pth``/``.safetensors`` of
            their IVTLR wrapper; then ``base`` gives the model config and tokenizer: hub id or local path).
        dtype, device: as ``ivtlr.placement.place`` (auto: the policy).
        trainable: a LoRA checkpoint's adapter stays trainable (to continue training from it).
    Raises:
        FileNotFoundError / ValueError / CheckpointError naming the path.
    """
    path = Path(path)
    if path.is_file():
        return _load_authors(path, base, dtype, device, log)
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint at {path}")
    meta = read_meta(path)
    verify_checkpoint(path)
    cfg = TrainConfig.load(path / "config.yaml")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
    if meta["kind"] == "full":
        from transformers import AutoConfig, AutoModelForImageTextToText

        where = place(dtype, device, pretrained=cfg.model.name_or_path is not None)
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(path / "model"))
        load_weights(model, path)
        if model.config.model_type == "chameleon":  # discrete codes: no gradient ever reaches the VQ image tokenizer
            model.model.vqmodel.requires_grad_(False)
    else:
        from peft import PeftModel

        where = place(dtype, device, pretrained=True, trained_dtype=meta.get("dtype"))
        base_cfg = dataclasses.replace(cfg.model, lora=False)
        base_model = build_pretrained(base_cfg, tokenizer, where.dtype, log=log)
        model = PeftModel.from_pretrained(base_model, path / "model", is_trainable=trainable)
    fam = family_of(model)
    if fam.name != cfg.model.backbone:
        raise ValueError(f"{path}: its config says backbone {cfg.model.backbone!r} but the model is a "
                         f"{model.config.model_type if hasattr(model, 'config') else '?'} ({fam.name}): wrong checkpoint?")
    log(f"{path}: {fam.name}, {where}")
    return Loaded(model.to(device=where.device, dtype=where.dtype).eval(), tokenizer, cfg, fam, where)


def _load_authors(path: Path, base: str | None, dtype: str, device, log) -> Loaded:
    if base is None:
        raise ValueError(f"{path} is an authors' checkpoint file: pass the base model (hub id or local path) for "
                         "its config and tokenizer, e.g. --base Qwen/Qwen2-VL-7B-Instruct")
    where = place(dtype, device, pretrained=True)
    model = load_authors_checkpoint(path, base, dtype=where.dtype)
    tokenizer = load_tokenizer(base)
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise ValueError(f"{path}: its vocabulary ({vocab}) is smaller than the tokenizer of {base} with the latent "
                         f"tokens ({len(tokenizer)}): wrong base model?")
    fam = family_of(model)  # from the base's config.model_type: Chameleon's .pth gets Chameleon's ids and prompts
    cfg = TrainConfig()
    cfg.model.backbone = fam.name
    cfg.model.name_or_path = base
    log(f"{path}: authors' checkpoint over {base} ({fam.name}), {where}")
    return Loaded(model.to(where.device).eval(), tokenizer, cfg, fam, where)
