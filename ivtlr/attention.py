"""Last-query-row attention capture under sdpa.

IVT-LR selects image tokens by the attention of one query row (the row whose hidden state is fed back),
averaged over all layers and heads. The authors run eager attention and keep every layer's full (B, H, S, S)
map to read that one row. Here sdpa stays the attention implementation; an attention backend registered with
transformers' ``AttentionInterface`` runs sdpa and, only inside ``record_last_row()``, also keeps the
chunk's last query row, the layer's keys (past + current) and its mask: references, no arithmetic. After the
forward, ``mean_last_row`` computes that row's scores against all keys (one product per layer) and the softmax,
masks and mean of every layer at once, instead of a dozen small ops per layer inside the forward: O(H * L) per layer
instead of O(H * L^2) memory.

This module registers nothing at import time; ``register_lastrow_backend()`` is called by the backbones
when they configure a model.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import torch

BACKEND_NAME = "ivtlr_sdpa_lastrow"

# The list that the attention backend appends to, per layer, while a recorder is active (else None).
_ROWS: contextvars.ContextVar[list[LastRow] | None] = contextvars.ContextVar("ivtlr_lastrow", default=None)
_REGISTERED = False


class LastRow(NamedTuple):
    """What one layer's last query row needs: read by ``mean_last_row`` before the next forward (a static cache
    writes its keys in place)."""

    query: torch.Tensor  # (B, H, 1, Dh) the chunk's last query row, after the rotary embedding
    key: torch.Tensor  # (B, H_kv, L_k, Dh) past + current keys
    mask: torch.Tensor | None  # the layer's (B, 1 or H, t, >= L_k) mask, bool (True = attend) or additive
    scale: float
    groups: int  # query heads per key head


def _sdpa_lastrow_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward  # cached after 1st call

    groups = getattr(module, "num_key_value_groups", 1)
    masked_chunk = attention_mask is not None and query.shape[2] > 1
    if masked_chunk and groups > 1 and query.device.type == "cpu" and kwargs.get("position_bias") is None:
        # A masked chunk on grouped key heads (a latent pass, a padded prompt): transformers repeats the keys and
        # values for every query head; sdpa's own grouping reads them in place, several times faster on a CPU.
        # (One-token steps keep transformers' path, which groups them already.)
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask[..., :key.shape[-2]], dropout_p=dropout, scale=scaling,
            enable_gqa=True,
        ).transpose(1, 2).contiguous()
    else:
        out, _ = sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if torch.compiler.is_compiling():  # the compiled decode step records nothing (and cannot read a ContextVar)
        return out, None
    rows = _ROWS.get()
    if rows is not None:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        rows.append(LastRow(query[:, :, -1:], key, attention_mask, scale, groups))
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
def record_last_row() -> Iterator[list[LastRow]]:
    """Collect, for every attention layer run inside the block, what its last query row needs (``LastRow``)."""
    rows: list[LastRow] = []
    token = _ROWS.set(rows)
    try:
        yield rows
    finally:
        _ROWS.reset(token)


def mean_last_row(rows: list[LastRow]) -> torch.Tensor:
    """The recorded layers' last-row attention weights averaged over layers and heads: (B, L_k). Raises if nothing
    was recorded.

    The softmax of q k^T * scale (masked) per layer and head, as sdpa weighs the values, computed in float32: the
    scores per layer (``_scores``), the softmax and the mean of every layer at once."""
    if not rows:
        raise RuntimeError(
            "no attention rows were recorded: the language model does not run the "
            f"'{BACKEND_NAME}' attention backend (see Backbone.configure_attention)"
        )
    with torch.no_grad():
        return torch.stack([_scores(r) for r in rows]).softmax(-1).mean(dim=(0, 2))  # (layers, B, H, L) -> (B, L)


def _scores(row: LastRow) -> torch.Tensor:
    """One layer's (B, H, L_k) float32 scores q k^T * scale of its last query row, masked. A query head h reads key
    head h // groups (transformers' repeat_kv), so the heads are grouped instead of the keys copied."""
    B, H, _, Dh = row.query.shape
    L = row.key.shape[-2]
    q = row.query.float().reshape(B, H // row.groups, row.groups, Dh)  # .float() is no copy in float32
    s = torch.matmul(q, row.key.float().transpose(-1, -2)).view(B, H, L) * row.scale
    if row.mask is None:
        return s
    m = row.mask[:, :, -1, :L]  # (B, 1 or H, L)
    return torch.where(m, s, float("-inf")) if m.dtype == torch.bool else s + m.float()


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
