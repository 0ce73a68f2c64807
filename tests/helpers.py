"""Tiny random Qwen2-VL models and synthetic token sequences for the engine tests (no tokenizer, no network)."""

from __future__ import annotations

import random

import torch

from ivtlr.backbones import backbone_for
from ivtlr.batching import Sample
from ivtlr.tiny import QwenSpecialIds, TinyQwen2VLSpec, build_tiny_qwen2vl

IDS = QwenSpecialIds(pad=0, eos=1, vision_start=2, vision_end=3, image_pad=4, video_pad=5,
                     start_latent=6, end_latent=7, latent=8)
FIRST_TEXT_ID = 10
SPEC = TinyQwen2VLSpec(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                       num_kv_heads=2, vision_depth=1, vision_embed_dim=32, vision_heads=2)


def tiny_model(seed: int = 0, lora: bool = False, spec: TinyQwen2VLSpec = SPEC):
    model = build_tiny_qwen2vl(spec, IDS, seed=seed)
    if lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed + 1)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        for name, p in model.named_parameters():  # LoRA B starts at zero: make the adapters matter
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.05)
        model.eval()
    return model


def tiny_backbone(seed: int = 0, lora: bool = False, spec: TinyQwen2VLSpec = SPEC):
    return backbone_for(tiny_model(seed, lora, spec), IDS.token_ids())


def image(rows: int, cols: int, seed: int) -> dict[str, torch.Tensor]:
    """Random pixel values for an image of rows x cols merged tokens (2x2 patches of 14 px each)."""
    g = torch.Generator().manual_seed(seed)
    patches = rows * 2 * cols * 2
    return {"pixel_values": torch.randn(patches, 3 * 2 * 14 * 14, generator=g),
            "image_grid_thw": torch.tensor([[1, rows * 2, cols * 2]])}


def sample(seed: int, grid=(3, 4), n_pre=3, n_question=5, n_latent=3, n_rest=0, vocab=SPEC.vocab_size) -> Sample:
    """``[text | <vision_start> image <vision_end> | question | <latent> x n | rest]``; labels on the rest."""
    rng = random.Random(seed)
    text = lambda n: [rng.randrange(FIRST_TEXT_ID, vocab) for _ in range(n)]  # noqa: E731
    prompt = text(n_pre) + [IDS.vision_start] + [IDS.image_pad] * (grid[0] * grid[1]) + [IDS.vision_end]
    prompt += text(n_question)
    rest = text(n_rest - 1) + [IDS.eos] if n_rest else []
    ids = prompt + [IDS.latent] * n_latent + rest
    labels = [-100] * (len(prompt) + n_latent) + rest
    return Sample(ids, len(prompt), labels if n_rest else None, image(*grid, seed), id=f"s{seed}")
