"""Last-query-row attention capture under sdpa.

IVT-LR selects image tokens by the attention of one query row (the row whose hidden state is fed back),
averaged over all layers and heads. The authors run eager attention and keep every layer's full (B, H, S, S)
map to read that one row. Here sdpa stays the attention implementation; an attention backend registered with
transformers' ``AttentionInterface`` runs sdpa and, only while a ``LastRowRecorder`` is active, also
computes the softmax of the chunk's last query row against all keys in the cache: O(H * L) per layer instead
of O(H * L^2) memory.

This module registers nothing at import time; ``register_lastrow_backend()`` is called by the backbones
when they configure a model.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Iterator

import torch

BACKEND_NAME = "ivtlr_sdpa_lastrow"

# The list that the attention backend appends to, per layer, while a recorder is active (else None).
_ROWS: contextvars.ContextVar[list[torch.Tensor] | None] = contextvars.ContextVar("ivtlr_lastrow", default=None)
_REGISTERED = False


def _sdpa_lastrow_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward  # cached after 1st call

    out, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )
    if torch.compiler.is_compiling():  # the compiled decode step records nothing (and cannot read a ContextVar)
        return out, None
    rows = _ROWS.get()
    if rows is not None:
        with torch.no_grad():
            q = query[:, :, -1:, :]  # (B, H, 1, Dh): the chunk's last query row
            k = repeat_kv(key, getattr(module, "num_key_value_groups", 1))  # (B, H, L_k, Dh), past + current
            scale = scaling if scaling is not None else q.shape[-1] ** -0.5
            f32 = lambda t: t if t.dtype == torch.float32 else t.float()  # noqa: E731  (no op per layer in fp32)
            s = torch.matmul(f32(q), f32(k).transpose(-1, -2)) * scale  # (B, H, 1, L_k)
            if attention_mask is not None:
                m = attention_mask[:, :, -1:, : k.shape[-2]]
                s = torch.where(m, s, float("-inf")) if m.dtype == torch.bool else s + f32(m)
            rows.append(s.softmax(-1)[:, :, 0])  # (B, H, L_k)
    return out, None


def register_lastrow_backend() -> str:
    """Register the capture backend (and its mask function) with transformers once; returns its name.

    The mask function must be registered too: for an unknown backend name transformers builds no mask at
    all and sdpa silently falls back to ``is_causal`` (wrong with padding or with a KV cache).
    """
    global _REGISTERED
    if not _REGISTERED:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(BACKEND_NAME, _sdpa_lastrow_attention)
        AttentionMaskInterface.register(BACKEND_NAME, sdpa_mask)
        _REGISTERED = True
    return BACKEND_NAME


@contextmanager
def record_last_row() -> Iterator[list[torch.Tensor]]:
    """Collect, for every attention layer run inside the block, the last query row's weights (B, H, L_k)."""
    rows: list[torch.Tensor] = []
    token = _ROWS.set(rows)
    try:
        yield rows
    finally:
        _ROWS.reset(token)


def mean_last_row(rows: list[torch.Tensor]) -> torch.Tensor:
    """Average the recorded rows over layers and heads: (B, L_k). Raises if nothing was recorded."""
    if not rows:
        raise RuntimeError(
            "no attention rows were recorded: the language model does not run the "
            f"'{BACKEND_NAME}' attention backend (see Backbone.configure_attention)"
        )
    return torch.stack(rows).mean(dim=(0, 2))


def attention_measures(row: torch.Tensor, vision: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's two attention measures of one query row per sample (its Figure 5), and their values under
    uniform attention (the chance level), as a (B, 4) tensor.

    Args:
        row: (B, L) attention weights over the keys (a softmax row, 0 at padding), e.g. ``mean_last_row``.
        vision: (B, L) bool, True at image embeddings (the prompt's image tokens and the inserted latent vision).
        keys: (B, L) bool, the real keys (default: every key with a weight above 0).
    Returns:
        column 0: the vision/text ratio, attention mass on image embeddings over the mass on text and latent text
        (inf when there is no text mass); column 1: the focus, the inverse of the row's entropy (nats);
        columns 2 and 3: the same under uniform attention over the real keys.
    """
    row = row.float()
    keys = (row > 0) if keys is None else keys.bool()
    vision = vision.bool() & keys
    vis = (row * vision).sum(-1)
    txt = (row * (keys & ~vision)).sum(-1)
    p = row / row.sum(-1, keepdim=True).clamp(min=1e-12)
    entropy = -(p * p.clamp(min=1e-30).log()).sum(-1)
    n_vis, n_all = vision.sum(-1).float(), keys.sum(-1).float()
    return torch.stack([vis / txt, 1.0 / entropy, n_vis / (n_all - n_vis), 1.0 / n_all.log()], -1)
