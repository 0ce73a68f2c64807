"""The engine's equivalences on a CUDA device in bfloat16 (``python -m pytest -m gpu``; skipped without CUDA).

In bf16 two schedules of the same computation round differently, so the logits are compared with a bf16
tolerance; the selections and the greedy tokens must still agree, as they do on the CPU in float32.
"""

from __future__ import annotations

import pytest
import torch

from helpers import KITS
from ivtlr.backbones import backbone_for
from ivtlr.batching import collate
from ivtlr.engine import LatentConfig, LatentEngine

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
ALL = [pytest.param(kit, id=name) for name, kit in KITS.items()]
BF16_TOL = 0.05  # of the logits' scale


def _backbone(kit, seed: int):
    model = kit.model(seed).to("cuda", torch.bfloat16)
    return backbone_for(model, kit.tokens)


def _batch(samples, kit):
    batch = collate(samples, kit.tokens.pad).to("cuda")
    batch.vision = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in batch.vision.items()}
    return batch


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.float() - b.float()).abs().max().item() <= BF16_TOL * max(1.0, b.float().abs().max().item())


@pytest.mark.parametrize("kit", ALL)
def test_cached_equals_recomputed_in_bf16_on_cuda(kit):
    bb = _backbone(kit, 1)
    grids = kit.grids((3, 4), (2, 3))
    batch = _batch([kit.sample(s, grid=g, n_question=q) for s, g, q in zip((1, 2), grids, (5, 9))], kit)
    fast = LatentEngine(bb, LatentConfig(k=2)).generate(batch, 6)
    slow = LatentEngine(bb, LatentConfig(k=2, use_cache=False)).generate(batch, 6)
    assert fast.selected == slow.selected
    assert torch.equal(fast.sequences, slow.sequences)
    assert _close(fast.first_logits, slow.first_logits)


@pytest.mark.parametrize("kit", ALL)
def test_batched_equals_alone_in_bf16_on_cuda(kit):
    bb = _backbone(kit, 3)
    eng = LatentEngine(bb, LatentConfig(k=2))
    grids = kit.grids((3, 4), (2, 3), (4, 4))
    samples = [kit.sample(s, grid=g, n_pre=pre, n_question=q) for s, g, pre, q in
               zip((4, 5, 6), grids, (3, 1, 6), (5, 12, 2))]
    batched = eng.generate(_batch(samples, kit), 7)
    for b, s in enumerate(samples):
        alone = eng.generate(_batch([s], kit), 7)
        n = alone.num_generated[0]
        assert batched.selected[b] == alone.selected[0]
        assert batched.sequences[b, :n].tolist() == alone.sequences[0, :n].tolist()
        assert _close(batched.first_logits[b], alone.first_logits[0])


@pytest.mark.parametrize("kit", ALL)
def test_compiled_decode_equals_eager_in_bf16_on_cuda(kit):
    import torch._dynamo

    torch._dynamo.reset()
    bb = _backbone(kit, 3)
    grids = kit.grids((3, 4), (2, 3))
    batch = _batch([kit.sample(s, grid=g, n_question=q) for s, g, q in zip((1, 2), grids, (5, 9))], kit)
    eager = LatentEngine(bb, LatentConfig(k=2)).generate(batch, 6)
    compiled = LatentEngine(bb, LatentConfig(k=2, decode="compiled")).generate(batch, 6)  # CUDA graphs
    assert eager.selected == compiled.selected
    assert torch.equal(eager.sequences, compiled.sequences)
    assert _close(eager.first_logits, compiled.first_logits)
