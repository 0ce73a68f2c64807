"""Tiny randomly initialised models for tests, benchmarks and the CPU demo (built offline from a config).

Token ids are passed in (from the project's tiny tokenizer, or fixed ids in tests), so the same builder
serves both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .backbones.base import TokenIds


@dataclass
class TinyQwen2VLSpec:
    """Sizes of a tiny Qwen2-VL. Defaults: the benchmark model of issue #2 (3.2M parameters)."""

    vocab_size: int = 300
    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 2
    vision_depth: int = 2
    vision_embed_dim: int = 128
    vision_heads: int = 4

    def __post_init__(self):
        head_dim = self.hidden_size // self.num_heads
        if self.hidden_size % self.num_heads or head_dim % 2:
            raise ValueError(f"hidden_size {self.hidden_size} must split into {self.num_heads} heads of even size")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")

    @property
    def mrope_section(self) -> list[int]:
        half = self.hidden_size // self.num_heads // 2  # rotary pairs per head, split over (t, h, w)
        t = half // 4
        h = (half - t) // 2
        return [t, h, half - t - h]


@dataclass(frozen=True)
class QwenSpecialIds:
    """The Qwen2-VL special ids a tiny model's config needs, plus the latent tokens."""

    image_pad: int
    video_pad: int
    vision_start: int
    vision_end: int
    latent: int
    eos: int
    pad: int
    start_latent: int | None = None
    end_latent: int | None = None

    def token_ids(self) -> TokenIds:
        return TokenIds(self.latent, self.image_pad, self.eos, self.pad, self.start_latent, self.end_latent)


def tiny_qwen2vl_config(spec: TinyQwen2VLSpec, ids: QwenSpecialIds, attn_implementation: str = "sdpa"):
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=dict(
            vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads, max_position_embeddings=4096,
            rope_scaling={"type": "mrope", "mrope_section": spec.mrope_section},
            pad_token_id=ids.pad, bos_token_id=None, eos_token_id=ids.eos,
        ),
        vision_config=dict(
            depth=spec.vision_depth, embed_dim=spec.vision_embed_dim, hidden_size=spec.hidden_size,
            num_heads=spec.vision_heads, mlp_ratio=2, patch_size=14, spatial_merge_size=2, in_channels=3,
            temporal_patch_size=2,
        ),
        image_token_id=ids.image_pad, video_token_id=ids.video_pad,
        vision_start_token_id=ids.vision_start, vision_end_token_id=ids.vision_end,
        attn_implementation=attn_implementation,
    )


def build_tiny_qwen2vl(spec: TinyQwen2VLSpec, ids: QwenSpecialIds, seed: int = 0):
    """A randomly initialised tiny ``Qwen2VLForConditionalGeneration`` in eval mode (deterministic from seed)."""
    from transformers import Qwen2VLForConditionalGeneration

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(spec, ids))
    return model.eval()
