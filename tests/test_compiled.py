"""``decode="compiled"`` (a static-shape KV cache and the torch.compile'd decode step) against the eager engine:
the same tokens, selections and first logits, batched with different latent counts, for every backbone; and a
batch of another size (a recompile) still exact."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from helpers import KITS
from ivtlr.batching import collate
from ivtlr.engine import LatentConfig, LatentEngine

ALL = [pytest.param(kit, id=name) for name, kit in KITS.items()]


def batch_of(kit, n):
    grids = kit.grids((3, 4), (2, 3), (4, 4))[:n]
    samples = [kit.sample(s, grid=g, n_pre=pre, n_question=q, n_latent=nl) for s, g, pre, q, nl in
               zip((4, 5, 6), grids, (3, 1, 6), (5, 12, 2), (3, 2, 3))][:n]
    return collate(samples, kit.tokens.pad)


@pytest.mark.parametrize("kit", ALL)
def test_compiled_decode_equals_eager(kit):
    torch._dynamo.reset()  # a fresh compile per backbone (the recompile limit is per process)
    torch._dynamo.utils.counters.clear()
    bb = kit.backbone(seed=3)
    eager = LatentEngine(bb, LatentConfig(k=2))
    compiled = LatentEngine(bb, LatentConfig(k=2, decode="compiled"))
    for n in (3, 1):  # batch 3, then batch 1: another shape
        batch = batch_of(kit, n)
        a, b = eager.generate(batch, 7), compiled.generate(batch, 7)
        assert a.selected == b.selected
        assert a.num_generated == b.num_generated
        assert torch.equal(a.sequences, b.sequences)
        assert (a.first_logits - b.first_logits).abs().max() < 1e-5
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile (not an eager fallback)


def test_static_cache_too_small_is_an_error():
    kit = KITS["qwen2-vl"]
    bb = kit.backbone(seed=3)
    engine = LatentEngine(bb, LatentConfig(k=2, decode="compiled"))
    batch = batch_of(kit, 1)
    layout = engine._layout(batch)
    with pytest.raises(ValueError, match="static KV cache holds"):
        seq, _, _ = engine._prefill(batch, layout, max_len=layout.p - 1)
