"""Everything a run needs, built in one place: device and dtype, task data, tokenizer, model, engine.

Used by training (``ivtlr.train``) and evaluation (``ivtlr.evaluate_cli``) so that both see the same prompts,
tokens and model set-up. Real models come from a hub id or a local path (LoRA through PEFT); tiny models are
built from scratch with a tokenizer trained on the task's own text (the CPU demo and tests).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from .backbones import TokenIds, backbone_for
from .config import ModelConfig, TrainConfig
from .curriculum import EncodedExample, encode_example
from .engine import LatentEngine


@dataclass
class Setup:
    task: object
    tokenizer: object
    model: torch.nn.Module
    tokens: TokenIds
    encoder: object
    engine: LatentEngine
    train: list[EncodedExample]
    val: list[EncodedExample]
    val_examples: dict  # id -> task Example (for scoring)


def choose_dtype(name: str, device: torch.device) -> tuple[torch.dtype, str]:
    """The training dtype and the reason it was chosen."""
    if name == "float32":
        return torch.float32, "asked for float32"
    if name == "bfloat16":
        return torch.bfloat16, "asked for bfloat16"
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16, f"auto: {torch.cuda.get_device_name(device)} supports bfloat16"
    return torch.float32, f"auto: {'no bfloat16 support on this GPU' if device.type == 'cuda' else 'CPU'}"


def prompt_encoder(backbone: str, tokenizer, image_size: int | None):
    if backbone in ("qwen2-vl", "qwen2.5-vl"):
        from .backbones.qwen2vl import Qwen2VLPromptEncoder

        return Qwen2VLPromptEncoder(tokenizer, image_size)
    if backbone == "chameleon":
        from .backbones.chameleon import ChameleonPromptEncoder

        return ChameleonPromptEncoder(tokenizer, image_size)
    raise ValueError(f"no prompt encoder for backbone {backbone!r}")


def token_ids(tokenizer, backbone: str) -> TokenIds:
    conv = tokenizer.convert_tokens_to_ids
    image = "<image>" if backbone == "chameleon" else "<|image_pad|>"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return TokenIds(latent=conv("<|latent|>"), image=conv(image), eos=tokenizer.eos_token_id, pad=pad,
                    start_latent=conv("<|start-latent|>"), end_latent=conv("<|end-latent|>"))


def task_corpus(task, examples) -> list[str]:
    """The task's own text, for a tiny model's tokenizer."""
    out = []
    for ex in examples:
        out.append(task.prompt(ex, "train"))
        out.append(task.prompt(ex, "infer"))
        out.extend(task.step_targets(ex))
        out.append(task.answer_text(ex))
    return out


def build_pretrained(cfg: ModelConfig, tokenizer, dtype: torch.dtype, log: Callable[[str], None]):
    """A pretrained model with the latent tokens added (rows initialised from ``init_latent_from``) and LoRA."""
    from transformers import AutoModelForImageTextToText

    from .compat import lora_config

    model = AutoModelForImageTextToText.from_pretrained(cfg.name_or_path, dtype=dtype)
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

        model = get_peft_model(model, lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(f"LoRA r={cfg.lora_r} alpha={cfg.lora_alpha}: {trainable:,} trainable parameters (language model only)")
    return model


def load_split(task, cfg: TrainConfig, split: str, limit: int | None):
    examples = task.load(cfg.data.source, split, on_error=cfg.data.on_error)
    return list(examples)[:limit] if limit is not None else list(examples)


def build_setup(cfg: TrainConfig, device: torch.device, log: Callable[[str], None] = print,
                model=None, tokenizer=None, need_train: bool = True) -> Setup:
    """Build the run's parts. ``model``/``tokenizer`` may be given (loading a checkpoint for evaluation)."""
    from .tasks import get_task
    from .tiny import build_tiny_for_backbone, build_tiny_tokenizer_for_backbone
    from .tokenizer import load_tokenizer

    task = get_task(cfg.data.task, prompt_style=cfg.data.prompt_style)
    train_raw = load_split(task, cfg, cfg.data.train_split, cfg.data.max_train) if need_train else []
    val_raw = load_split(task, cfg, cfg.data.val_split, cfg.data.val_size) if cfg.data.val_size else []
    dtype, reason = choose_dtype(cfg.model.dtype, device)
    if model is None:
        log(f"dtype {str(dtype).replace('torch.', '')} ({reason}); device {device}")
        if cfg.model.init_from is not None:
            from .loading import load_model

            model, tokenizer, _ = load_model(cfg.model.init_from, trainable=True)
            log(f"initialised from {cfg.model.init_from}: {sum(p.numel() for p in model.parameters()):,} parameters")
        elif cfg.model.name_or_path is None:
            tokenizer = build_tiny_tokenizer_for_backbone(cfg.model, task_corpus(task, train_raw or val_raw))
            model = build_tiny_for_backbone(cfg.model, tokenizer, cfg.optim.seed)
            log(f"tiny {cfg.model.backbone} from scratch: {sum(p.numel() for p in model.parameters()):,} parameters, "
                f"vocabulary {len(tokenizer)} (full fine-tuning)")
        else:
            tokenizer = load_tokenizer(cfg.model.name_or_path)
            model = build_pretrained(cfg.model, tokenizer, dtype, log)
    model = model.to(device=device, dtype=dtype)
    tokens = token_ids(tokenizer, cfg.model.backbone)
    encoder = prompt_encoder(cfg.model.backbone, tokenizer, cfg.model.image_size)
    latent = cfg.latent
    if cfg.run.gradient_checkpointing and latent.use_cache:
        log("gradient checkpointing drops the KV cache in training: the engine recomputes the prefix per latent pass")
        latent = dataclasses.replace(latent, use_cache=False)
    engine = LatentEngine(backbone_for(model, tokens), latent)
    train = [encode_example(task, encoder, ex, tokens.image) for ex in train_raw]
    val = [encode_example(task, encoder, ex, tokens.image) for ex in val_raw]
    need = latent.k_effective * cfg.curriculum.max_latent_stage
    for ex in train + val:
        if ex.n_image_tokens < need:
            raise ValueError(f"record {ex.id!r}: its image has {ex.n_image_tokens} tokens, fewer than K x "
                             f"max_latent_stage = {latent.k_effective} x {cfg.curriculum.max_latent_stage} = {need}")
    return Setup(task, tokenizer, model, tokens, encoder, engine, train, val, {ex.id: ex for ex in val_raw})
