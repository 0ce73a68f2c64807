"""Chameleon behind the backbone interface.

Image tokens: Chameleon has no vision encoder feeding the language model. Its VQ tokenizer turns an image into
discrete codes (one per 2^(levels-1) x 2^(levels-1) pixels: 16x16 px, 1024 codes per 512x512 image in the real
model), which are ordinary vocabulary ids (the ``IMGIMG...Z`` tokens). They replace the ``<image>`` placeholders
and are embedded by the same table as text, so the "image embeddings" IVT-LR selects from are token embeddings
of those codes. Candidates are the placeholder positions (``<racm3:break>``/``<eoss>`` around them are not).
Positions: 1-D rotary only. Logits: the model's head, with every image-code id at ``finfo.min`` as in
``ChameleonForConditionalGeneration`` (the model never writes image tokens in text mode).

Unlike the authors' Chameleon code, nothing here assumes batch size 1 or exactly 1024 contiguous image tokens:
the engine finds each sample's placeholders itself.

``ChameleonPromptEncoder`` lays out the prompt as ``ChameleonProcessor`` does (bos, the image between
``<racm3:break>`` and ``<eoss>``, then the text) and preprocesses images with ``ChameleonImageProcessorPil``.

The family's tiny from-scratch models live here too: ``TinyChameleonSpec`` (with its VQ image tokenizer),
``ChameleonSpecialIds``, the builder and the tiny tokenizer with one token per VQ code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch

from ..attention import register_lastrow_backend
from ..tokenizer import PROMPT_TEXT, add_latent_tokens, train_bpe_model
from .base import Backbone, PromptEncoder, TokenIds, seeded_init


class ChameleonPromptEncoder(PromptEncoder):
    """``<s> <racm3:break> <image> x N <eoss>`` + the task's prompt text; the image as (1, 3, S, S) pixel values.

    The layout is ``ChameleonProcessor``'s, which is what the pretrained model saw and what the authors' inference
    fed it (their training data dropped the bos and the two markers: a train/inference drift not kept here, where
    both use this one layout). The processor's chat-mode separator ``<reserved08706>`` is not appended: in the
    authors' inference it fell after the latent slots (they sat in the processor's text), and their training
    never had it. The markers are not image tokens: latent vision selects among the N placeholders only.

    Image side S and tokens per image N: the tokenizer's recorded ``image_size`` / ``image_seq_length`` (tiny
    tokenizers from ``build_tiny_chameleon_tokenizer``), else the real model's 512 px and 1024 tokens (one VQ code
    per 16x16 px). ``image_size`` overrides S (the image is first resized to S x S); N then scales with it at the
    same pixels per token. Without torchvision the PIL image processor is used: resize the shortest edge to S
    (Lanczos), centre-crop S x S, scale to [-1, 1).

    Raises ValueError (at construction) for a side that is not a multiple of the pixels per token.
    """

    #: ``ChameleonProcessor``'s and ``ChameleonImageProcessor``'s defaults (facebook/chameleon-7b)
    DEFAULT_IMAGE_SIZE = 512
    DEFAULT_IMAGE_SEQ_LENGTH = 1024

    def __init__(self, tokenizer, image_size: int | None = None):
        super().__init__(tokenizer, image_size)
        from transformers.models.chameleon.image_processing_pil_chameleon import ChameleonImageProcessorPil

        recorded = getattr(tokenizer, "init_kwargs", {}) or {}
        base_side = int(recorded.get("image_size") or self.DEFAULT_IMAGE_SIZE)
        base_tokens = int(recorded.get("image_seq_length") or self.DEFAULT_IMAGE_SEQ_LENGTH)
        per_side = math.isqrt(base_tokens)
        if per_side**2 != base_tokens or base_side % per_side:
            raise ValueError(f"image_seq_length {base_tokens} is not a square grid over {base_side} px")
        pixels_per_token = base_side // per_side
        self.side = image_size or base_side
        if self.side % pixels_per_token:
            raise ValueError(f"image_size {self.side} is not a multiple of the {pixels_per_token} px per image token")
        self.n_image_tokens = (self.side // pixels_per_token) ** 2
        self.processor = ChameleonImageProcessorPil(size={"shortest_edge": self.side},
                                                    crop_size={"height": self.side, "width": self.side})
        conv = tokenizer.convert_tokens_to_ids
        self.image_id, self.image_start, self.image_end = conv("<image>"), conv("<racm3:break>"), conv("<eoss>")
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []

    def _boxes(self, size, grid):
        """The processor scales the shortest edge to the side and centre-crops a square: the VQ grid tiles that
        centred square of the image (its side: the shortest edge), the margins outside it are never seen."""
        (w, h), (rows, cols) = size, grid
        m = min(w, h)
        x0, y0 = (w - m) / 2, (h - m) / 2
        return [(x0 + c * m / cols, y0 + r * m / rows, x0 + (c + 1) * m / cols, y0 + (r + 1) * m / rows)
                for r in range(rows) for c in range(cols)]

    def encode_prompt(self, text, image):
        ids = self.encode_text(text)
        if image is None:
            return self.bos + ids, {}
        pixel_values = self.processor(images=[self.resize(image)], return_tensors="pt")["pixel_values"]  # (1, 3, S, S)
        image_ids = [self.image_start] + [self.image_id] * self.n_image_tokens + [self.image_end]
        return self.bos + image_ids + ids, {"pixel_values": pixel_values}


class ChameleonBackbone(Backbone):
    name = "chameleon"
    model_types = ("chameleon",)
    image_token = "<image>"
    supports_mrope = False
    encoder_class = ChameleonPromptEncoder

    @classmethod
    def tiny_spec(cls, cfg, vocab_size):
        """No vision tower (``tiny_vision_depth`` does not apply); the VQ side is ``cfg.image_size`` or 48 px."""
        return TinyChameleonSpec(vocab_size=vocab_size, hidden_size=cfg.tiny_hidden,
                                 intermediate_size=2 * cfg.tiny_hidden, num_layers=cfg.tiny_layers,
                                 num_heads=cfg.tiny_heads, num_kv_heads=max(1, cfg.tiny_heads // 2),
                                 tie_embeddings=cfg.tiny_tie_embeddings,
                                 vq_resolution=cfg.image_size or TINY_CHAMELEON_IMAGE_SIZE, vq_codes=TINY_CHAMELEON_CODES)

    @classmethod
    def build_tiny_tokenizer(cls, cfg, corpus):
        """Also holds the VQ code tokens, and records the image geometry that ``ChameleonPromptEncoder`` reads back."""
        spec = cls.tiny_spec(cfg, cfg.tiny_vocab)
        return build_tiny_chameleon_tokenizer(corpus, cfg.tiny_vocab, spec.vq_codes, image_size=spec.vq_resolution,
                                              image_seq_length=spec.image_tokens)

    @classmethod
    def build_tiny(cls, cfg, tokenizer, seed):
        """The VQ image tokenizer is frozen (its output is discrete: no gradient ever reaches it)."""
        spec = cls.tiny_spec(cfg, len(tokenizer))
        recorded = tokenizer.init_kwargs.get("image_size")
        if recorded is not None and recorded != spec.vq_resolution:
            raise ValueError(f"the tokenizer was built for {recorded} px images, the model for {spec.vq_resolution} px")
        model = build_tiny_chameleon(spec, chameleon_special_ids(tokenizer, spec.vq_codes), seed=seed)
        model.model.vqmodel.requires_grad_(False)
        return model

    def __init__(self, model, tokens):
        super().__init__(model, tokens)
        self._code_mask_cache: torch.Tensor | None = None

    def configure_attention(self) -> None:
        backend = register_lastrow_backend()
        # "" = the top-level config, i.e. the decoder layers; vq_config keeps its own setting (its attention block
        # is a plain conv-attention that no backend touches).
        self.hf.set_attn_implementation({"": backend})

    @property
    def _lm(self):
        return self.hf.model  # ChameleonModel: .embed_tokens, .layers, .norm, .vqmodel

    @property
    def image_code_ids(self) -> list[int]:
        """The vocabulary ids of the VQ codes (sorted)."""
        return self._lm.vocabulary_mapping.image_tokens

    def _code_mask(self, device) -> torch.Tensor:
        """(V,) bool: True at the image-code ids (cached per device)."""
        cached = self._code_mask_cache
        if cached is None or cached.device != torch.device(device):
            V = self.hf.get_output_embeddings().weight.shape[0]
            cached = torch.zeros(V, dtype=torch.bool, device=device)
            cached[torch.tensor(self.image_code_ids, dtype=torch.long, device=device)] = True
            self._code_mask_cache = cached
        return cached

    def image_codes(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, H/f * W/f) vocabulary ids of their VQ codes, raster order, long."""
        vq = self._lm.vqmodel
        with torch.no_grad():  # the VQ tokenizer is frozen and its output is discrete
            codes = self._lm.get_image_tokens(pixel_values.to(device=self.device, dtype=vq.dtype))
        return codes.long()  # get_image_tokens returns int32

    def embed_inputs(self, input_ids, vision):
        pixel_values = vision.get("pixel_values")
        if pixel_values is None:
            return self.embed_tokens(input_ids)
        codes = self.image_codes(pixel_values)  # (N_images, n_tokens)
        mask = self.image_mask(input_ids)
        if int(mask.sum()) != codes.numel():
            raise ValueError(
                f"image placeholders and image tokens differ: {int(mask.sum())} <image> tokens in the batch, "
                f"{codes.numel()} VQ codes from {codes.shape[0]} image(s) of {tuple(pixel_values.shape[-2:])} px"
            )
        # placeholders -> code ids (in batch order, raster order per image), then one shared embedding table
        return self.embed_tokens(input_ids.masked_scatter(mask, codes.reshape(-1)))

    def image_grids(self, vision):
        f = 2 ** (len(self.hf.config.vq_config.channel_multiplier) - 1)  # pixels per token along each side
        pixel_values = vision["pixel_values"]
        h, w = pixel_values.shape[-2:]
        return [(int(h) // f, int(w) // f)] * pixel_values.shape[0]

    def run(self, inputs_embeds, position_ids, attention_mask, cache=None):
        if position_ids.shape[0] != 1:
            raise ValueError("Chameleon has 1-D rotary positions only: expected position_ids of shape (1, B, t)")
        out = self._lm(
            inputs_embeds=inputs_embeds,
            position_ids=position_ids[0],
            attention_mask=attention_mask,
            cache=cache,
            use_cache=cache is not None,
        )
        return out.last_hidden_state, out.cache

    def logits(self, hidden):
        logits = self.hf.get_output_embeddings()(hidden)
        # as ChameleonForConditionalGeneration: image codes are never predicted in text mode
        return logits.masked_fill(self._code_mask(logits.device), torch.finfo(logits.dtype).min)


# ------------------------------------------------------------------------------------------- tiny models
# Chameleon's specials as in facebook/chameleon-7b (bos, pad, eos, the chat-mode separator, image start and end
# markers, the image placeholder), at ids 0-6 as in the reference Chameleon fixture.
CHAMELEON_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<reserved08706>", "<racm3:break>", "<eoss>", "<image>")


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

    return seeded_init(ChameleonForConditionalGeneration, tiny_chameleon_config(spec, ids), seed)


#: Tiny Chameleon image side when ``model.image_size`` is unset. The synthetic boards are 84x84 px (3x3 cells of
#: 28 px); at 48 px with one VQ code per 4x4 px they become 12x12 = 144 image tokens, 4x4 per cell, so token
#: borders fall on cell borders (also for 4x4 boards: 3x3 tokens per cell). K x 3 steps (demo: 9) stay a small
#: share of the candidates, as 3 x 64 of 1024 in the real model. Native 84 px would give 441 tokens (VQ ~9x slower).
TINY_CHAMELEON_IMAGE_SIZE = 48
#: Tiny Chameleon codebook size (the reference fixture's). The random, frozen VQ spreads 8 synthetic boards at 48 px
#: over 127 distinct codes (a 64-code book: 53).
TINY_CHAMELEON_CODES = 256


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


def build_tiny_chameleon_tokenizer(corpus: Iterable[str], vocab_size: int = 512, n_codes: int = 256,
                                   image_size: int | None = None, image_seq_length: int | None = None):
    """Train a byte-level BPE tokenizer for tiny from-scratch Chameleon models.

    Layout (as in the reference Chameleon fixture): ids 0-6 are CHAMELEON_SPECIAL_TOKENS (``<s>``, ``<pad>``,
    ``</s>``, ``<reserved08706>``, ``<racm3:break>``, ``<eoss>``, ``<image>``), then the BPE text tokens, then the
    ``n_codes`` VQ code tokens ``IMGIMG...Z`` (code c at ``first + c``, contiguous), then LATENT_TOKENS in the
    authors' order (added last, as the authors add them to the real vocabulary).

    Args:
        corpus: the task's text (questions, options, rationales).
        vocab_size: target size of the text part: the 256 byte symbols, the 7 specials and the merges (fewer if
            the corpus runs out of merges). The code and latent tokens come on top.
        n_codes: the VQ codebook size of the model (one token per code).
        image_size, image_seq_length: the image geometry of the model this tokenizer serves (square side in
            pixels, image tokens per image), recorded with the tokenizer (``init_kwargs``, saved in
            ``tokenizer_config.json``) as the real model records it in its processor config, so that
            ``ChameleonPromptEncoder`` finds it again from a checkpoint. None: the real model's (512, 1024).
    Returns:
        A ``PreTrainedTokenizerFast``: bos ``<s>``, eos ``</s>``, pad ``<pad>``, sep ``<reserved08706>``; every
        special, code and latent token is a single special token (``decode(skip_special_tokens=True)`` drops them).
        No chat template (Chameleon's prompt is plain text around the image). Round-trips through
        ``save_pretrained`` / ``AutoTokenizer.from_pretrained``.
    Raises:
        ValueError: vocab_size too small to hold the bytes and the specials, or n_codes < 1.
    """
    from transformers import PreTrainedTokenizerFast

    specials = CHAMELEON_SPECIAL_TOKENS
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size must be >= {256 + len(specials)} (bytes + specials), got {vocab_size}")
    if n_codes < 1:
        raise ValueError(f"n_codes must be >= 1, got {n_codes}")
    tk = train_bpe_model(corpus, vocab_size, specials, PROMPT_TEXT)
    geometry = {k: v for k, v in (("image_size", image_size), ("image_seq_length", image_seq_length)) if v is not None}
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                  sep_token="<reserved08706>", extra_special_tokens=list(specials[4:]), **geometry)
    tok.add_tokens([chameleon_code_name(c) for c in range(n_codes)], special_tokens=True)
    add_latent_tokens(tok)
    return tok


# ------------------------------------------------------------------------------------------- real-size presets
#: The released tokenizer's ids (``<image>`` 8711, ``<racm3:break>`` 8197, ``<eoss>`` 8196, the 8,192 VQ codes at
#: 4..8195); the latent token takes the vocabulary's last (reserved) row, so the published 65,536 rows are kept.
CHAMELEON_7B_IDS = ChameleonSpecialIds(image=8711, image_start=8197, image_end=8196, first_code=4, latent=65535,
                                       eos=2, pad=1, bos=0)


def chameleon_7b_config(layers: int | None = None, attn_implementation: str = "sdpa"):
    """facebook/chameleon-7b's published config.json (``layers`` cuts the language model's depth)."""
    from transformers import ChameleonConfig

    return ChameleonConfig(
        vocabulary_map=chameleon_vocabulary_map(CHAMELEON_7B_IDS, 8192),
        vocab_size=65536, hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers or 32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
        rope_theta=10000.0, qk_layernorm=True, swin_norm=False, attention_bias=False, tie_word_embeddings=False,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
        vq_config=dict(embed_dim=256, num_embeddings=8192, double_latent=False, latent_channels=256,
                       resolution=512, in_channels=3, base_channels=128, channel_multiplier=[1, 1, 2, 2, 4],
                       num_res_blocks=2, attn_resolutions=None, dropout=0.0),
        attn_implementation=attn_implementation,
    )
