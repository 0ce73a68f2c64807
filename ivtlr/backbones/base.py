"""The backbone interface: what the latent engine needs to know about one vision-language model, and what the
rest of the project needs to know about its family.

The engine (``ivtlr.engine``) is model-agnostic. Everything that differs between Qwen2-VL, Qwen2.5-VL and
Chameleon lives behind this interface: how ids are embedded and image embeddings scattered, which positions
hold image tokens, how rotary position ids are built, how one chunk of input embeddings runs against a KV cache,
and how a hidden state becomes logits. A backbone wraps a transformers model (optionally inside a PEFT
wrapper) and never owns training or generation logic.

Each backbone class also owns its family, as class attributes and class methods (no instance needed): the
transformers ``model_type`` values it serves, its prompt encoder, its special token ids, its LoRA targets, and its tiny
from-scratch model (sizes from a run's ``ModelConfig``, tokenizer, builder). ``ivtlr.backbones`` registers the
classes by ``model_type``; nothing else in the project branches on a backbone's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Iterable

import torch
from torch import nn

if TYPE_CHECKING:
    from ..config import ModelConfig

#: The authors' LoRA targets: every attention and MLP projection of the language model (r 64, alpha 16, dropout 0.05).
AUTHORS_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TokenIds:
    """Special token ids the engine needs. ``latent`` is ``<|latent|>``; ``image`` is the image placeholder."""

    latent: int
    image: int
    eos: int
    pad: int
    start_latent: int | None = None
    end_latent: int | None = None


def language_model_lora_pattern(targets=AUTHORS_LORA_TARGETS) -> str:
    """A PEFT ``target_modules`` regex matching the projections of the language model's layers only.

    Given as bare names, Qwen2.5-VL's vision MLP (``gate_proj/up_proj/down_proj``) would be wrapped too.
    """
    return r"(?:.*\.)?(?:language_model\.layers|model\.layers)\.\d+\.(?:self_attn|mlp)\.(?:" + "|".join(targets) + ")"


def seeded_init(model_cls, config, seed: int):
    """``model_cls(config)`` initialised from ``seed`` without touching the global RNG, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.eval()


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (LoRA layers are injected in place, so calling it runs them)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class PromptEncoder(ABC):
    """Turns (prompt text, image) into the backbone's prompt ids and image inputs; text into ids.

    Args:
        tokenizer: the model's tokenizer with the latent tokens added.
        image_size: resize images to this square side first (None: keep their size).
    """

    def __init__(self, tokenizer, image_size: int | None = None):
        self.tokenizer = tokenizer
        self.image_size = image_size

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def resize(self, image):
        image = image.convert("RGB")
        if self.image_size is not None and image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size))
        return image

    def token_boxes(self, size: tuple[int, int], grid: tuple[int, int]) -> list[tuple[float, float, float, float]]:
        """The pixel box (x0, y0, x1, y1) in the original image of each image token, raster order.

        Args:
            size: the original image's (width, height).
            grid: the (rows, cols) of its image tokens (``Backbone.image_grids``).
        """
        w, h = size
        w1, h1 = (self.image_size, self.image_size) if self.image_size is not None else (w, h)  # after ``resize``
        sx, sy = w / w1, h / h1
        return [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in self._boxes((w1, h1), grid)]

    def _boxes(self, size: tuple[int, int], grid: tuple[int, int]) -> list[tuple[float, float, float, float]]:
        """``token_boxes`` in the coordinates of the image as ``resize`` returns it (the processor's input)."""
        raise NotImplementedError

    @abstractmethod
    def encode_prompt(self, text: str, image) -> tuple[list[int], dict[str, torch.Tensor]]:
        """The prompt ids (image placeholders expanded, ready for the latent slots or the answer to follow)
        and the per-image inputs of the backbone. Raises ValueError for an image the backbone cannot take."""


class Backbone(ABC):
    """Adapter between the latent engine and one vision-language model.

    Args:
        model: a transformers model for this backbone, or a PEFT model wrapping one.
        tokens: the special token ids.
    """

    #: registry name, e.g. "qwen2-vl" (``model.backbone`` in a run's config)
    name: ClassVar[str] = ""
    #: the transformers ``config.model_type`` values this adapter serves, e.g. ("qwen2_vl",)
    model_types: ClassVar[tuple[str, ...]] = ()
    #: the image placeholder token the prompt encoder expands and latent vision selects among
    image_token: ClassVar[str] = ""
    #: whether ``positions="mrope"`` (the model's own multimodal rotary positions) is available
    supports_mrope: ClassVar[bool] = False
    #: the prompt encoder of the family
    encoder_class: ClassVar[type[PromptEncoder]]

    # ------------------------------------------------------------------------------------------ family
    @classmethod
    def token_ids(cls, tokenizer) -> TokenIds:
        """The special ids of a tokenizer of this family with the latent tokens added."""
        conv = tokenizer.convert_tokens_to_ids
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return TokenIds(latent=conv("<|latent|>"), image=conv(cls.image_token), eos=tokenizer.eos_token_id, pad=pad,
                        start_latent=conv("<|start-latent|>"), end_latent=conv("<|end-latent|>"))

    @classmethod
    def prompt_encoder(cls, tokenizer, image_size: int | None = None) -> PromptEncoder:
        return cls.encoder_class(tokenizer, image_size)

    @classmethod
    def lora_config(cls, r: int = 64, alpha: float = 16, dropout: float = 0.05):
        """The authors' LoRA set-up on this family's language model (its projections only, no vision part)."""
        from peft import LoraConfig

        return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                          target_modules=language_model_lora_pattern(AUTHORS_LORA_TARGETS), task_type="CAUSAL_LM")

    @classmethod
    @abstractmethod
    def tiny_spec(cls, cfg: "ModelConfig", vocab_size: int):
        """The sizes of a tiny from-scratch model from ``cfg.tiny_*``."""

    @classmethod
    @abstractmethod
    def build_tiny_tokenizer(cls, cfg: "ModelConfig", corpus: Iterable[str]):
        """A tiny offline tokenizer of this family trained on ``corpus`` (``cfg.tiny_vocab`` text tokens)."""

    @classmethod
    @abstractmethod
    def build_tiny(cls, cfg: "ModelConfig", tokenizer, seed: int) -> nn.Module:
        """A randomly initialised tiny model for ``tokenizer``, sized by ``cfg.tiny_*``, in eval mode, deterministic
        from ``seed``. Raises ValueError when the tokenizer does not fit the model."""

    def __init__(self, model: nn.Module, tokens: TokenIds):
        self.model = model
        self.hf = unwrap_peft(model)
        self.tokens = tokens

    # ----------------------------------------------------------------------------------------------- set-up
    @abstractmethod
    def configure_attention(self) -> None:
        """Make the language model run the last-row capture backend (``ivtlr.attention``), vision parts untouched."""

    def configure_vision(self) -> None:
        """Faster forms of the vision tower's layers that compute the same products (default: none)."""

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    @property
    def max_positions(self) -> int | None:
        """The language model's position budget (``max_position_embeddings``), None if the config has none."""
        config = self.hf.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        return getattr(text, "max_position_embeddings", None)

    @property
    def embedding(self) -> nn.Embedding:
        return self.hf.get_input_embeddings()

    # ------------------------------------------------------------------------------------------ embeddings
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, D) token embeddings."""
        return self.embedding(input_ids)

    @abstractmethod
    def embed_inputs(self, input_ids: torch.Tensor, vision: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T) ids -> (B, T, D) input embeddings with the image embeddings scattered into the image positions.

        Raises ValueError when the number of image placeholders does not match the images.
        """

    def image_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: the candidate image-token positions for latent vision."""
        return input_ids == self.tokens.image

    def image_grids(self, vision: dict[str, torch.Tensor]) -> list[tuple[int, int]]:
        """(rows, cols) of image tokens per image, in raster order, so offsets map back to image patches."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------- positions
    def mrope_positions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vision: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """(3, B, T) multimodal rotary positions of the prompt (only for backbones with ``supports_mrope``)."""
        raise ValueError(f"backbone '{self.name}' has 1-D rotary positions only: use positions='sequential'")

    # ------------------------------------------------------------------------------------------------ run
    def new_cache(self, max_len: int | None = None):
        """A growing KV cache, or with ``max_len`` a static-shape one holding ``max_len`` positions."""
        from transformers import DynamicCache, StaticCache

        if max_len is not None:
            return StaticCache(config=self.hf.config, max_cache_len=max_len)
        return DynamicCache(config=self.hf.config)

    def compiled_run(self):
        """``run`` under ``torch.compile`` for fixed-shape chunks on a static cache (CUDA graphs on a GPU), built
        once per backbone; its first calls compile (and recompile for a new batch size or chunk length)."""
        if getattr(self, "_compiled_run", None) is None:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._compiled_run = torch.compile(self.run, mode=mode, dynamic=False)
        return self._compiled_run

    @abstractmethod
    def run(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache=None,
    ) -> tuple[torch.Tensor, object]:
        """Run the language model over one chunk.

        Args:
            inputs_embeds: (B, t, D) the chunk.
            position_ids: (P, B, t) with P = 1 (1-D rotary) or 3 (M-RoPE).
            attention_mask: (B, past + t) 1 for real tokens, 0 for padding, covering the cache and the chunk; or
                the same already prepared as a (B, 1, t, past + t) boolean mask (True = attend), which the model
                must use as it is.
            cache: a cache from ``new_cache`` (appended to in place), or None to run without one.
        Returns:
            (B, t, D) last-layer hidden states after the final norm, and the cache.
        """

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) hidden states -> (..., V) next-token logits."""
        return self.hf.get_output_embeddings()(hidden)

    # ------------------------------------------------------------------------------------------- baseline
    def model_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra inputs the plain transformers forward/generate needs besides ids, mask and image inputs."""
        return {}

    def hf_generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vision: dict[str, torch.Tensor], new_tokens: int
    ) -> torch.Tensor:
        """Plain transformers ``generate`` producing exactly ``new_tokens`` greedy tokens (the benchmark baseline)."""
        return self.hf.generate(
            input_ids=input_ids, attention_mask=attention_mask, **vision, **self.model_inputs(input_ids),
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            pad_token_id=self.tokens.pad, eos_token_id=self.tokens.eos,
        )
