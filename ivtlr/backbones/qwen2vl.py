"""Qwen2-VL (and Qwen2.5-VL) behind the backbone interface.

Image tokens: the vision encoder's merged patch embeddings (one token per 28x28 pixels: 14 px patches, 2x2
merge), scattered into the ``<|image_pad|>`` positions between ``<|vision_start|>`` and ``<|vision_end|>``.
Positions: the engine's sequential 1-D ids (passed as 2-D ids, which the model replicates over its three
M-RoPE sections: what the authors' code does), or the model's own 3-D M-RoPE ids from ``get_rope_index``.
Qwen2.5-VL has the same language-model interface and differs only in its vision tower, so it is a subclass.
"""

from __future__ import annotations

import torch

from ..attention import register_lastrow_backend
from .base import Backbone, PromptEncoder


class Qwen2VLBackbone(Backbone):
    name = "qwen2-vl"
    supports_mrope = True

    def configure_attention(self) -> None:
        backend = register_lastrow_backend()
        # Text only: the vision blocks keep plain sdpa (no rows are ever read from them).
        self.hf.set_attn_implementation({"text_config": backend, "vision_config": "sdpa"})

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


class Qwen25VLBackbone(Qwen2VLBackbone):
    """Qwen2.5-VL: same language model and image-token layout; windowed vision tower."""

    name = "qwen2.5-vl"
