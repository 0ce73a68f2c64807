"""Qwen2-VL (and Qwen2.5-VL) behind the backbone interface.

Image tokens: the vision encoder's merged patch embeddings (one token per 28x28 pixels: 14 px patches, 2x2
merge), scattered into the ``<|image_pad|>`` positions between ``<|vision_start|>`` and ``<|vision_end|>``.
Positions: the engine's sequential 1-D ids (passed as 2-D ids, which the model replicates over its three
M-RoPE sections: what the authors' code does), or the model's own 3-D M-RoPE ids from ``get_rope_index``.
Qwen2.5-VL has the same language-model interface and differs only in its vision tower, so it is a subclass.

The family's tiny from-scratch models (tests, benchmarks, the CPU demo) live here too: ``TinyQwen2VLSpec``,
``QwenSpecialIds`` and the builders, with the tokenizer of ``ivtlr.tokenizer.build_tiny_tokenizer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import register_lastrow_backend
from ..tokenizer import build_tiny_tokenizer
from .base import Backbone, PromptEncoder, TokenIds, seeded_init

if TYPE_CHECKING:
    from ..config import ModelConfig


class PatchConv3d(nn.Conv3d):
    """The patch embedding's Conv3d, whose kernel equals its stride and whose every input is one kernel-sized
    patch, computed as the matmul it is: the same product (within float rounding), several times faster on a CPU
    (docs/benchmarks.md: the prefill of ``ivtlr bench`` goes from 142 to 177 questions/s). Other inputs take the
    convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != tuple(self.kernel_size):
            return super().forward(x)
        out = F.linear(x.flatten(1), self.weight.flatten(1), self.bias)  # (N, C_out)
        return out[:, :, None, None, None]


class Qwen2VLPromptEncoder(PromptEncoder):
    """One user turn through the tokenizer's chat template: the image, then the text; then the assistant prefix.

    ``<|image_pad|>`` is expanded to the image's merged-token count (the processor's grid / merge^2). Without
    torchvision the PIL image processor is used (identical preprocessing).
    """

    def __init__(self, tokenizer, image_size: int | None = None, min_pixels: int = 28 * 28, max_pixels: int = 28 * 28 * 1280):
        super().__init__(tokenizer, image_size)
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        self.processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
        self.image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")

    def _boxes(self, size, grid):
        """The processor resizes each axis to a multiple of 28 px (one merged token): the tokens tile the whole image,
        whatever the resize, so token (r, c) covers the fraction [c/cols, (c+1)/cols] x [r/rows, (r+1)/rows]."""
        (w, h), (rows, cols) = size, grid
        return [(c * w / cols, r * h / rows, (c + 1) * w / cols, (r + 1) * h / rows)
                for r in range(rows) for c in range(cols)]

    def encode_prompt(self, text, image):
        content = ([{"type": "image"}] if image is not None else []) + [{"type": "text", "text": text}]
        chat = self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                  add_generation_prompt=True)
        ids = self.encode_text(chat)
        if image is None:
            return ids, {}
        pv = self.processor(images=[self.resize(image)], return_tensors="pt")
        grid = pv["image_grid_thw"]  # (1, 3)
        n = int(grid.prod()) // self.processor.merge_size**2
        at = ids.index(self.image_pad)
        ids = ids[:at] + [self.image_pad] * n + ids[at + 1:]
        return ids, {"pixel_values": pv["pixel_values"], "image_grid_thw": grid}


class Qwen2VLBackbone(Backbone):
    name = "qwen2-vl"
    model_types = ("qwen2_vl",)
    image_token = "<|image_pad|>"
    supports_mrope = True
    encoder_class = Qwen2VLPromptEncoder

    @classmethod
    def tiny_spec(cls, cfg, vocab_size):
        return _tiny_spec(cfg, vocab_size)

    @classmethod
    def build_tiny_tokenizer(cls, cfg, corpus):
        return build_tiny_tokenizer(corpus, cfg.tiny_vocab)

    @classmethod
    def build_tiny(cls, cfg, tokenizer, seed):
        return build_tiny_qwen2vl(cls.tiny_spec(cfg, len(tokenizer)), qwen_special_ids(tokenizer), seed=seed)

    def configure_attention(self) -> None:
        backend = register_lastrow_backend()
        # Text only: the vision blocks keep plain sdpa (no rows are ever read from them).
        self.hf.set_attn_implementation({"text_config": backend, "vision_config": "sdpa"})

    def configure_vision(self) -> None:
        proj = self._vlm.visual.patch_embed.proj
        if type(proj) is nn.Conv3d:  # the class swap keeps the module's weights, state dict and hooks
            proj.__class__ = PatchConv3d

    @property
    def _vlm(self):
        return self.hf.model  # Qwen2VLModel: .visual, .language_model

    @property
    def merge(self) -> int:
        return self.hf.config.vision_config.spatial_merge_size

    def embed_inputs(self, input_ids, vision):
        embeds = self.embed_tokens(input_ids)  # (B, T, D)
        pixel_values = vision.get("pixel_values")
        if pixel_values is None:
            return embeds
        feats = self._vlm.get_image_features(pixel_values, vision["image_grid_thw"]).pooler_output
        image_embeds = torch.cat(list(feats), 0).to(embeds.dtype)  # (N_image_tokens, D) over the whole batch
        mask = self.image_mask(input_ids)
        if int(mask.sum()) != image_embeds.shape[0]:
            raise ValueError(
                f"image placeholders and image features differ: {int(mask.sum())} <|image_pad|> tokens in the batch, "
                f"{image_embeds.shape[0]} image embeddings from image_grid_thw={vision['image_grid_thw'].tolist()}"
            )
        return embeds.masked_scatter(mask[..., None].expand_as(embeds), image_embeds)

    def image_grids(self, vision):
        grid = vision["image_grid_thw"]
        return [(int(h) // self.merge, int(w) // self.merge) for _, h, w in grid.tolist()]

    def mrope_positions(self, input_ids, attention_mask, vision):
        type_ids = self.image_mask(input_ids).long()  # 0 text, 1 image
        pos, _ = self._vlm.get_rope_index(
            input_ids, type_ids, image_grid_thw=vision.get("image_grid_thw"), attention_mask=attention_mask
        )
        return pos  # (3, B, T)

    def run(self, inputs_embeds, position_ids, attention_mask, cache=None):
        pos = position_ids[0] if position_ids.shape[0] == 1 else position_ids  # (B, t) or (3, B, t)
        out = self._vlm.language_model(
            inputs_embeds=inputs_embeds,
            position_ids=pos,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=cache is not None,
        )
        return out.last_hidden_state, out.cache

    def model_inputs(self, input_ids):
        return {"mm_token_type_ids": self.image_mask(input_ids).long()}  # transformers 5.x needs it with images


class Qwen25VLBackbone(Qwen2VLBackbone):
    """Qwen2.5-VL: same language model and image-token layout; windowed vision tower."""

    name = "qwen2.5-vl"
    model_types = ("qwen2_5_vl",)

    @classmethod
    def build_tiny(cls, cfg, tokenizer, seed):
        return build_tiny_qwen25vl(cls.tiny_spec(cfg, len(tokenizer)), qwen_special_ids(tokenizer), seed=seed)


# ------------------------------------------------------------------------------------------- tiny models
@dataclass
class TinyQwen2VLSpec:
    """Sizes of a tiny Qwen2-VL. Defaults: the model of `ivtlr bench` (3.2M parameters)."""

    vocab_size: int = 300
    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 2
    vision_depth: int = 2
    vision_embed_dim: int = 128
    vision_heads: int = 4
    tie_embeddings: bool = False
    """lm_head shares the input embedding matrix (as in Qwen2-VL-2B; the 7B models are untied)."""

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


def _qwen_text_config(spec: TinyQwen2VLSpec, ids: QwenSpecialIds) -> dict:
    """The language model of the tiny Qwen2-VL and Qwen2.5-VL (identical in both)."""
    return dict(
        vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, max_position_embeddings=4096,
        rope_scaling={"type": "mrope", "mrope_section": spec.mrope_section},
        pad_token_id=ids.pad, bos_token_id=None, eos_token_id=ids.eos,
    )


def tiny_qwen2vl_config(spec: TinyQwen2VLSpec, ids: QwenSpecialIds, attn_implementation: str = "sdpa"):
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=_qwen_text_config(spec, ids),
        vision_config=dict(
            depth=spec.vision_depth, embed_dim=spec.vision_embed_dim, hidden_size=spec.hidden_size,
            num_heads=spec.vision_heads, mlp_ratio=2, patch_size=14, spatial_merge_size=2, in_channels=3,
            temporal_patch_size=2,
        ),
        image_token_id=ids.image_pad, video_token_id=ids.video_pad,
        vision_start_token_id=ids.vision_start, vision_end_token_id=ids.vision_end,
        attn_implementation=attn_implementation, tie_word_embeddings=spec.tie_embeddings,
    )


def build_tiny_qwen2vl(spec: TinyQwen2VLSpec, ids: QwenSpecialIds, seed: int = 0):
    """A randomly initialised tiny ``Qwen2VLForConditionalGeneration`` in eval mode (deterministic from seed)."""
    from transformers import Qwen2VLForConditionalGeneration

    return seeded_init(Qwen2VLForConditionalGeneration, tiny_qwen2vl_config(spec, ids), seed)


def tiny_qwen25vl_config(spec: TinyQwen2VLSpec, ids: QwenSpecialIds, attn_implementation: str = "sdpa"):
    """Qwen2.5-VL with the same language model as ``tiny_qwen2vl_config``; its windowed vision tower has a gated
    MLP and a full-attention last block (``window_size`` 112 px = 4x4 merged tokens per window)."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=_qwen_text_config(spec, ids),
        vision_config=dict(
            depth=spec.vision_depth, hidden_size=spec.vision_embed_dim, intermediate_size=2 * spec.vision_embed_dim,
            num_heads=spec.vision_heads, out_hidden_size=spec.hidden_size, window_size=112,
            fullatt_block_indexes=[spec.vision_depth - 1], patch_size=14, spatial_merge_size=2, in_channels=3,
            temporal_patch_size=2,
        ),
        image_token_id=ids.image_pad, video_token_id=ids.video_pad,
        vision_start_token_id=ids.vision_start, vision_end_token_id=ids.vision_end,
        attn_implementation=attn_implementation, tie_word_embeddings=spec.tie_embeddings,
    )


def build_tiny_qwen25vl(spec: TinyQwen2VLSpec, ids: QwenSpecialIds, seed: int = 0):
    """A randomly initialised tiny ``Qwen2_5_VLForConditionalGeneration`` in eval mode (deterministic from seed)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    return seeded_init(Qwen2_5_VLForConditionalGeneration, tiny_qwen25vl_config(spec, ids), seed)




#: Fixed special ids of tiny Qwen models built without a tokenizer (engine tests, ``ivtlr bench``, ``ivtlr smoke``).
TINY_QWEN_IDS = QwenSpecialIds(pad=0, eos=1, vision_start=2, vision_end=3, image_pad=4, video_pad=5, latent=8,
                               start_latent=6, end_latent=7)


def qwen_special_ids(tokenizer) -> QwenSpecialIds:
    """The Qwen2-VL special ids of a tokenizer (the tiny one or a real one with the latent tokens added)."""
    conv = tokenizer.convert_tokens_to_ids
    return QwenSpecialIds(image_pad=conv("<|image_pad|>"), video_pad=conv("<|video_pad|>"),
                          vision_start=conv("<|vision_start|>"), vision_end=conv("<|vision_end|>"),
                          latent=conv("<|latent|>"), eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id,
                          start_latent=conv("<|start-latent|>"), end_latent=conv("<|end-latent|>"))


def _tiny_spec(cfg: "ModelConfig", vocab_size: int) -> TinyQwen2VLSpec:
    """Key/value heads are half the heads, the MLP is twice as wide, the vision tower half as wide."""
    return TinyQwen2VLSpec(vocab_size=vocab_size, hidden_size=cfg.tiny_hidden, intermediate_size=2 * cfg.tiny_hidden,
                           num_layers=cfg.tiny_layers, num_heads=cfg.tiny_heads,
                           num_kv_heads=max(1, cfg.tiny_heads // 2), tie_embeddings=cfg.tiny_tie_embeddings,
                           vision_depth=cfg.tiny_vision_depth, vision_embed_dim=max(32, cfg.tiny_hidden // 2),
                           vision_heads=max(1, cfg.tiny_heads // 2))


# ------------------------------------------------------------------------------------------- real-size presets
#: The special ids of the released Qwen2-VL / Qwen2.5-VL tokenizer; the latent tokens take the first free rows of
#: the 152,064-row embedding (the tokenizer has 151,665 tokens), as adding them to the real tokenizer does.
QWEN_7B_IDS = QwenSpecialIds(pad=151643, eos=151645, vision_start=151652, vision_end=151653, image_pad=151655,
                             video_pad=151656, start_latent=151665, end_latent=151666, latent=151667)


def _qwen_7b_text_config(layers: int | None, max_positions: int) -> dict:
    """The Qwen2-7B language model both released VL models share (``layers`` cuts its depth)."""
    return dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=layers or 28,
                num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=max_positions,
                rms_norm_eps=1e-6, rope_theta=1000000.0, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
                pad_token_id=QWEN_7B_IDS.pad, bos_token_id=151643, eos_token_id=QWEN_7B_IDS.eos)


def _qwen_7b_ids() -> dict:
    ids = QWEN_7B_IDS
    return dict(image_token_id=ids.image_pad, video_token_id=ids.video_pad, vision_start_token_id=ids.vision_start,
                vision_end_token_id=ids.vision_end, tie_word_embeddings=False)


def qwen2vl_7b_config(layers: int | None = None, attn_implementation: str = "sdpa"):
    """Qwen/Qwen2-VL-7B-Instruct's published config.json (``layers`` cuts the language model's depth)."""
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=_qwen_7b_text_config(layers, 32768),
        vision_config=dict(depth=32, embed_dim=1280, hidden_size=3584, mlp_ratio=4, num_heads=16, in_channels=3,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        attn_implementation=attn_implementation, **_qwen_7b_ids())


def qwen25vl_7b_config(layers: int | None = None, attn_implementation: str = "sdpa"):
    """Qwen/Qwen2.5-VL-7B-Instruct's published config.json (``layers`` cuts the language model's depth)."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=_qwen_7b_text_config(layers, 128000),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           window_size=112, fullatt_block_indexes=[7, 15, 23, 31], patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        attn_implementation=attn_implementation, **_qwen_7b_ids())
