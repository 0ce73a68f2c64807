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
"""

from __future__ import annotations

import math

import torch

from ..attention import register_lastrow_backend
from .base import Backbone, PromptEncoder


class ChameleonBackbone(Backbone):
    name = "chameleon"
    supports_mrope = False

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

    def encode_prompt(self, text, image):
        ids = self.encode_text(text)
        if image is None:
            return self.bos + ids, {}
        pixel_values = self.processor(images=[self.resize(image)], return_tensors="pt")["pixel_values"]  # (1, 3, S, S)
        image_ids = [self.image_start] + [self.image_id] * self.n_image_tokens + [self.image_end]
        return self.bos + image_ids + ids, {"pixel_values": pixel_values}
