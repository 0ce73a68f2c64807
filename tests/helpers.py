"""Tiny random models and synthetic token sequences for the engine tests, one factory ("kit") per backbone.

No tokenizer, no network. Every kit lays a sample out the same way::

    [text | <image start> <image> x rows*cols <image end> | question | <|latent|> x n | rest]

with the backbone's own ids and image inputs (Qwen2-VL / Qwen2.5-VL: vision encoder patches; Chameleon: an
image for its VQ tokenizer, one code per 4x4 pixels).
"""

from __future__ import annotations

import random

import torch

from ivtlr.backbones import TokenIds, backbone_for, family
from ivtlr.backbones.chameleon import ChameleonSpecialIds, TinyChameleonSpec, build_tiny_chameleon
from ivtlr.backbones.qwen2vl import TINY_QWEN_IDS, TinyQwen2VLSpec, build_tiny_qwen2vl, build_tiny_qwen25vl
from ivtlr.batching import Sample


class Kit:
    """How to build a tiny model, its backbone and samples for one backbone family."""

    name: str
    tokens: TokenIds
    image_start: int
    image_end: int
    text_ids: range  # ids drawn for random text
    supports_mrope: bool = False
    #: whether one batch may hold images of different sizes (Chameleon's pixel_values is one (B, 3, H, W) tensor)
    mixed_image_sizes: bool = True

    def build(self, seed: int):
        raise NotImplementedError

    def image(self, rows: int, cols: int, seed: int) -> dict[str, torch.Tensor]:
        """Random image inputs giving rows x cols image tokens."""
        raise NotImplementedError

    def plain_kwargs(self, input_ids: torch.Tensor) -> dict:
        """Extra kwargs the plain transformers forward needs besides ids, mask and image inputs."""
        return {}

    def model(self, seed: int = 0, lora: bool = False):
        model = self.build(seed)
        if lora:
            from peft import get_peft_model

            torch.manual_seed(seed + 1)
            model = get_peft_model(model, family(self.name).lora_config(r=8, alpha=16, dropout=0.0))  # language model only
            for name, p in model.named_parameters():  # LoRA B starts at zero: make the adapters matter
                if "lora_B" in name:
                    torch.nn.init.normal_(p, std=0.05)
            model.eval()
        return model

    def backbone(self, seed: int = 0, lora: bool = False):
        return backbone_for(self.model(seed, lora), self.tokens)

    def grids(self, *grids: tuple[int, int]) -> list[tuple[int, int]]:
        """Image grids for the samples of one batch: as given, or all the first one where a batch's images must
        share a size."""
        return list(grids) if self.mixed_image_sizes else [grids[0]] * len(grids)

    def sample(self, seed: int, grid=(3, 4), n_pre=3, n_question=5, n_latent=3, n_rest=0) -> Sample:
        """One sample (layout in the module docstring); labels on the rest when ``n_rest`` > 0."""
        rng = random.Random(seed)
        text = lambda n: [rng.choice(self.text_ids) for _ in range(n)]  # noqa: E731
        prompt = text(n_pre) + [self.image_start] + [self.tokens.image] * (grid[0] * grid[1]) + [self.image_end]
        prompt += text(n_question)
        rest = text(n_rest - 1) + [self.tokens.eos] if n_rest else []
        ids = prompt + [self.tokens.latent] * n_latent + rest
        labels = [-100] * (len(prompt) + n_latent) + rest
        return Sample(ids, len(prompt), labels if n_rest else None, self.image(*grid, seed), id=f"s{seed}")

    def __repr__(self):
        return self.name


class QwenKit(Kit):
    IDS = TINY_QWEN_IDS
    SPEC = TinyQwen2VLSpec(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                           num_kv_heads=2, vision_depth=1, vision_embed_dim=32, vision_heads=2)
    supports_mrope = True

    def __init__(self, name: str, builder):
        self.name, self._builder = name, builder
        self.tokens = self.IDS.token_ids()
        self.image_start, self.image_end = self.IDS.vision_start, self.IDS.vision_end
        self.text_ids = range(10, self.SPEC.vocab_size)

    def build(self, seed):
        return self._builder(self.SPEC, self.IDS, seed=seed)

    def image(self, rows, cols, seed):
        """rows x cols merged tokens = (2 rows) x (2 cols) patches of 14 px, flattened as the processor does."""
        g = torch.Generator().manual_seed(seed)
        return {"pixel_values": torch.randn(rows * 2 * cols * 2, 3 * 2 * 14 * 14, generator=g),
                "image_grid_thw": torch.tensor([[1, rows * 2, cols * 2]])}

    def plain_kwargs(self, input_ids):
        return {"mm_token_type_ids": (input_ids == self.tokens.image).long()}


class ChameleonKit(Kit):
    IDS = ChameleonSpecialIds(pad=0, eos=1, image_start=2, image_end=3, image=4, first_code=96,
                              start_latent=6, end_latent=7, latent=8)
    SPEC = TinyChameleonSpec(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                             num_kv_heads=2, vq_codes=32)
    name = "chameleon"
    mixed_image_sizes = False

    def __init__(self):
        self.tokens = self.IDS.token_ids()
        self.image_start, self.image_end = self.IDS.image_start, self.IDS.image_end
        self.text_ids = range(10, self.IDS.first_code)  # never an image code (the head masks those out)

    def build(self, seed):
        return build_tiny_chameleon(self.SPEC, self.IDS, seed=seed)

    def image(self, rows, cols, seed):
        f = self.SPEC.downsample
        g = torch.Generator().manual_seed(seed)
        return {"pixel_values": torch.rand(1, 3, rows * f, cols * f, generator=g) * 2 - 1}


KITS = {kit.name: kit for kit in (QwenKit("qwen2-vl", build_tiny_qwen2vl), QwenKit("qwen2.5-vl", build_tiny_qwen25vl),
                                  ChameleonKit())}


def load_reference_fixture(folder):
    """(expected.json, cases.pt, the authors' checkpoint loaded through ivtlr.compat) of a golden fixture folder."""
    import json

    from ivtlr.compat import load_authors_checkpoint

    expected = json.loads((folder / "expected.json").read_text())
    cases = torch.load(folder / "cases.pt", weights_only=True)
    model = load_authors_checkpoint(folder / "model.pth", folder, lora_alpha=expected["lora"]["lora_alpha"],
                                    lora_dropout=expected["lora"]["lora_dropout"])
    return expected, cases, model
