"""Tiny randomly initialised models for tests, benchmarks and the CPU demo (built offline from a config):
Qwen2-VL, Qwen2.5-VL and Chameleon (with its VQ image tokenizer).

Token ids are passed in (from the project's tiny tokenizer, or fixed ids in tests), so the same builder
serves both. ``build_tiny_tokenizer_for_backbone`` and ``build_tiny_for_backbone`` pick the sizes of a run's
tiny tokenizer and model from its ``ModelConfig`` (the ``tiny_*`` fields) for each backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import torch

from .backbones.base import TokenIds

if TYPE_CHECKING:
    from .config import ModelConfig


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


def _seeded(model_cls, config, seed: int):
    """``model_cls(config)`` initialised from ``seed`` without touching the global RNG, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.eval()


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

    return _seeded(Qwen2VLForConditionalGeneration, tiny_qwen2vl_config(spec, ids), seed)


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

    return _seeded(Qwen2_5_VLForConditionalGeneration, tiny_qwen25vl_config(spec, ids), seed)


# ----------------------------------------------------------------------------------------------- Chameleon
@dataclass
class TinyChameleonSpec:
    """Sizes of a tiny Chameleon and its VQ image tokenizer.

    A ``vq_resolution`` x ``vq_resolution`` image becomes (R / 2^(len(multiplier) - 1))^2 image tokens: the
    default R = 32 gives 8x8 = 64 (fast tests); ``TinyChameleonSpec.real_geometry()`` gives R = 128 -> 32x32 =
    1024 tokens, the count of the real 7B model. The encoder is convolutional, so smaller images of any size that
    divides by the downsampling factor also work (fewer tokens).
    """

    vocab_size: int = 300
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 4
    vq_resolution: int = 32
    vq_channel_multiplier: tuple[int, ...] = (1, 1, 2)
    vq_codes: int = 64
    """Codebook size: ids ``first_code .. first_code + vq_codes - 1`` of the vocabulary are the image codes."""
    vq_embed_dim: int = 16
    vq_base_channels: int = 32
    """Must be a multiple of 32 (the VQ encoder's GroupNorm has 32 groups)."""
    tie_embeddings: bool = False
    """lm_head shares the input embedding matrix."""

    def __post_init__(self):
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"hidden_size {self.hidden_size} must split into {self.num_heads} heads of even size")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.vq_base_channels % 32:
            raise ValueError(f"vq_base_channels must be a multiple of 32 (GroupNorm(32)), got {self.vq_base_channels}")
        if self.vq_resolution % self.downsample:
            raise ValueError(f"vq_resolution {self.vq_resolution} must be a multiple of {self.downsample}")

    @classmethod
    def real_geometry(cls, **kw) -> "TinyChameleonSpec":
        """The real model's image geometry (1024 tokens, 32x32) on tiny layers: R = 128."""
        return cls(**{"vq_resolution": 128, **kw})

    @property
    def downsample(self) -> int:
        """Pixels per image token along each side."""
        return 2 ** (len(self.vq_channel_multiplier) - 1)

    @property
    def image_grid(self) -> tuple[int, int]:
        side = self.vq_resolution // self.downsample
        return side, side

    @property
    def image_tokens(self) -> int:
        return self.image_grid[0] * self.image_grid[1]


@dataclass(frozen=True)
class ChameleonSpecialIds:
    """The Chameleon ids a tiny model's config needs, plus the latent tokens.

    ``image`` is the ``<image>`` placeholder; ``image_start``/``image_end`` are ``<racm3:break>``/``<eoss>``
    around the placeholders; the VQ codes are ids ``first_code .. first_code + vq_codes - 1``.
    """

    image: int
    image_start: int
    image_end: int
    first_code: int
    latent: int
    eos: int
    pad: int
    bos: int | None = None
    start_latent: int | None = None
    end_latent: int | None = None

    def token_ids(self) -> TokenIds:
        return TokenIds(self.latent, self.image, self.eos, self.pad, self.start_latent, self.end_latent)


def chameleon_code_name(code: int) -> str:
    """The vocabulary name of VQ code ``code``: digits written as letters A-J, e.g. 12 -> ``IMGIMGBCZ``."""
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def chameleon_vocabulary_map(ids: ChameleonSpecialIds, n_codes: int) -> dict[str, int]:
    """The part of ``vocabulary_map`` the model reads: ``<image>`` and one ``IMGIMG...Z`` name per VQ code."""
    return {"<image>": ids.image, **{chameleon_code_name(c): ids.first_code + c for c in range(n_codes)}}


def tiny_chameleon_config(spec: TinyChameleonSpec, ids: ChameleonSpecialIds, attn_implementation: str = "sdpa"):
    from transformers import ChameleonConfig

    if ids.first_code + spec.vq_codes > spec.vocab_size:
        raise ValueError(f"image codes {ids.first_code}..{ids.first_code + spec.vq_codes - 1} exceed the vocabulary "
                         f"of {spec.vocab_size}")
    return ChameleonConfig(
        vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=4096, pad_token_id=ids.pad, bos_token_id=ids.bos, eos_token_id=ids.eos,
        tie_word_embeddings=spec.tie_embeddings,
        vocabulary_map=chameleon_vocabulary_map(ids, spec.vq_codes),
        vq_config=dict(
            embed_dim=spec.vq_embed_dim, num_embeddings=spec.vq_codes, latent_channels=spec.vq_embed_dim,
            resolution=spec.vq_resolution, base_channels=spec.vq_base_channels,
            channel_multiplier=list(spec.vq_channel_multiplier), num_res_blocks=1, attn_resolutions=[],
        ),
        attn_implementation=attn_implementation,
    )


def build_tiny_chameleon(spec: TinyChameleonSpec, ids: ChameleonSpecialIds, seed: int = 0):
    """A randomly initialised tiny ``ChameleonForConditionalGeneration`` in eval mode (deterministic from seed)."""
    from transformers import ChameleonForConditionalGeneration

    return _seeded(ChameleonForConditionalGeneration, tiny_chameleon_config(spec, ids), seed)


# ------------------------------------------------------------------------------------ per-backbone from a config
#: Tiny Chameleon image side when ``model.image_size`` is unset. The synthetic boards are 84x84 px (3x3 cells of
#: 28 px); at 48 px with one VQ code per 4x4 px they become 12x12 = 144 image tokens, 4x4 per cell, so token
#: borders fall on cell borders (also for 4x4 boards: 3x3 tokens per cell). K x 3 steps (demo: 9) stay a small
#: share of the candidates, as 3 x 64 of 1024 in the real model. Native 84 px would give 441 tokens (VQ ~9x slower).
TINY_CHAMELEON_IMAGE_SIZE = 48
#: Tiny Chameleon codebook size (the reference fixture's). The random, frozen VQ spreads 8 synthetic boards at 48 px
#: over 127 distinct codes (a 64-code book: 53).
TINY_CHAMELEON_CODES = 256


def tiny_spec_for_backbone(cfg: "ModelConfig", vocab_size: int) -> TinyQwen2VLSpec | TinyChameleonSpec:
    """The tiny model's sizes from ``cfg.tiny_*``: key/value heads are half the heads, the MLP is twice as wide."""
    sizes = dict(vocab_size=vocab_size, hidden_size=cfg.tiny_hidden, intermediate_size=2 * cfg.tiny_hidden,
                 num_layers=cfg.tiny_layers, num_heads=cfg.tiny_heads, num_kv_heads=max(1, cfg.tiny_heads // 2),
                 tie_embeddings=cfg.tiny_tie_embeddings)
    if cfg.backbone in ("qwen2-vl", "qwen2.5-vl"):
        return TinyQwen2VLSpec(**sizes, vision_depth=cfg.tiny_vision_depth,
                               vision_embed_dim=max(32, cfg.tiny_hidden // 2), vision_heads=max(1, cfg.tiny_heads // 2))
    if cfg.backbone == "chameleon":  # no vision tower: tiny_vision_depth does not apply
        return TinyChameleonSpec(**sizes, vq_resolution=cfg.image_size or TINY_CHAMELEON_IMAGE_SIZE,
                                 vq_codes=TINY_CHAMELEON_CODES)
    raise ValueError(f"no tiny model for backbone {cfg.backbone!r}")


def build_tiny_tokenizer_for_backbone(cfg: "ModelConfig", corpus: Iterable[str]):
    """The tiny tokenizer of ``cfg.backbone`` trained on ``corpus`` (``cfg.tiny_vocab`` text tokens).

    Qwen2-VL and Qwen2.5-VL share ``build_tiny_tokenizer``; Chameleon's also holds the VQ code tokens and records
    the image geometry (side, tokens per image) that ``ChameleonPromptEncoder`` reads back.
    """
    from .tokenizer import build_tiny_chameleon_tokenizer, build_tiny_tokenizer

    spec = tiny_spec_for_backbone(cfg, cfg.tiny_vocab)  # raises for an unknown backbone
    if isinstance(spec, TinyChameleonSpec):
        return build_tiny_chameleon_tokenizer(corpus, cfg.tiny_vocab, spec.vq_codes, image_size=spec.vq_resolution,
                                              image_seq_length=spec.image_tokens)
    return build_tiny_tokenizer(corpus, cfg.tiny_vocab)


def qwen_special_ids(tokenizer) -> QwenSpecialIds:
    """The Qwen2-VL special ids of a tokenizer (the tiny one or a real one with the latent tokens added)."""
    conv = tokenizer.convert_tokens_to_ids
    return QwenSpecialIds(image_pad=conv("<|image_pad|>"), video_pad=conv("<|video_pad|>"),
                          vision_start=conv("<|vision_start|>"), vision_end=conv("<|vision_end|>"),
                          latent=conv("<|latent|>"), eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id,
                          start_latent=conv("<|start-latent|>"), end_latent=conv("<|end-latent|>"))


def chameleon_special_ids(tokenizer, n_codes: int) -> ChameleonSpecialIds:
    """The Chameleon ids of a tokenizer whose ``n_codes`` image-code tokens have contiguous ids (as
    ``build_tiny_chameleon_tokenizer`` lays them out).

    Raises ValueError when a code token is missing or the codes are not contiguous.
    """
    conv = tokenizer.convert_tokens_to_ids
    vocab = tokenizer.get_vocab()
    names = [chameleon_code_name(c) for c in range(n_codes)]
    if any(n not in vocab for n in names):
        raise ValueError(f"the tokenizer lacks Chameleon's image-code tokens {names[0]}..{names[-1]}")
    first = vocab[names[0]]
    if [vocab[n] for n in names] != list(range(first, first + n_codes)):
        raise ValueError(f"the tokenizer's {n_codes} image-code tokens are not contiguous ids")
    return ChameleonSpecialIds(image=conv("<image>"), image_start=conv("<racm3:break>"), image_end=conv("<eoss>"),
                               first_code=first, latent=conv("<|latent|>"), eos=tokenizer.eos_token_id,
                               pad=tokenizer.pad_token_id, bos=tokenizer.bos_token_id,
                               start_latent=conv("<|start-latent|>"), end_latent=conv("<|end-latent|>"))


def build_tiny_for_backbone(cfg: "ModelConfig", tokenizer, seed: int):
    """A randomly initialised tiny model of ``cfg.backbone`` for ``tokenizer`` (from
    ``build_tiny_tokenizer_for_backbone``), sized by ``cfg.tiny_*``, in eval mode, deterministic from ``seed``.

    Chameleon's VQ image tokenizer is frozen (its output is discrete: no gradient ever reaches it).
    Raises ValueError for an unknown backbone, or a Chameleon tokenizer whose codes or recorded image side do
    not fit the model.
    """
    spec = tiny_spec_for_backbone(cfg, len(tokenizer))
    if cfg.backbone == "qwen2-vl":
        return build_tiny_qwen2vl(spec, qwen_special_ids(tokenizer), seed=seed)
    if cfg.backbone == "qwen2.5-vl":
        return build_tiny_qwen25vl(spec, qwen_special_ids(tokenizer), seed=seed)
    recorded = tokenizer.init_kwargs.get("image_size")
    if recorded is not None and recorded != spec.vq_resolution:
        raise ValueError(f"the tokenizer was built for {recorded} px images, the model for {spec.vq_resolution} px")
    model = build_tiny_chameleon(spec, chameleon_special_ids(tokenizer, spec.vq_codes), seed=seed)
    model.model.vqmodel.requires_grad_(False)
    return model
