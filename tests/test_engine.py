"""Equivalence tests of the latent engine: every fast path against the slow, obvious one."""

from __future__ import annotations

import pytest
import torch

from helpers import IDS, sample, tiny_backbone
from ivtlr.batching import collate
from ivtlr.engine import LatentConfig, LatentEngine

TOL = 1e-5


def engine(backbone, **kw):
    return LatentEngine(backbone, LatentConfig(**{"k": 2, **kw}))


def train_batch(seeds=(1, 2, 3), n_latent=(3, 3, 3), grids=((3, 4), (2, 3), (3, 3)), questions=(5, 9, 2)):
    return collate([sample(s, grid=g, n_question=q, n_latent=n, n_rest=6)
                    for s, n, g, q in zip(seeds, n_latent, grids, questions)], IDS.pad)


def lora_grads(backbone):
    return {n: p.grad.clone() for n, p in backbone.model.named_parameters() if p.grad is not None and "lora" in n}


# ------------------------------------------------------------------------------ cached == recomputed
@pytest.mark.parametrize("positions", ["sequential", "mrope"])
def test_cached_generation_equals_recomputation(positions):
    bb = tiny_backbone()
    batch = collate([sample(s, grid=g, n_question=q) for s, g, q in [(1, (3, 4), 5), (2, (2, 3), 9)]], IDS.pad)
    fast = engine(bb, positions=positions).generate(batch, 6)
    slow = engine(bb, positions=positions, use_cache=False).generate(batch, 6)
    assert fast.selected == slow.selected
    assert torch.equal(fast.sequences, slow.sequences)
    assert (fast.first_logits - slow.first_logits).abs().max() < TOL


@pytest.mark.parametrize("latent_grad", ["detach", "full"])
def test_cached_training_equals_recomputation_with_lora_gradients(latent_grad):
    bb = tiny_backbone(lora=True)
    batch = train_batch()
    results = []
    for use_cache in (True, False):
        bb.model.zero_grad()
        out = engine(bb, latent_grad=latent_grad, use_cache=use_cache).forward(batch)
        out.loss.backward()
        results.append((out, lora_grads(bb)))
    (fast, g_fast), (slow, g_slow) = results
    assert fast.selected == slow.selected
    assert (fast.logits - slow.logits).abs().max() < TOL
    assert abs(fast.loss.item() - slow.loss.item()) < TOL
    assert g_fast.keys() == g_slow.keys() and len(g_fast) == 28  # 14 LoRA modules x (A, B)
    for name in g_fast:
        assert (g_fast[name] - g_slow[name]).abs().max() < TOL * max(1.0, g_slow[name].abs().max().item()), name


# ---------------------------------------------------------------------------- batched == one-by-one
@pytest.mark.parametrize("positions", ["sequential", "mrope"])
def test_batched_generation_equals_one_by_one(positions):
    bb = tiny_backbone(seed=3)
    eng = engine(bb, positions=positions)
    samples = [sample(s, grid=g, n_pre=pre, n_question=q) for s, g, pre, q in
               [(4, (3, 4), 3, 5), (5, (2, 3), 1, 12), (6, (4, 4), 6, 2)]]
    batched = eng.generate(collate(samples, IDS.pad), 7)
    for b, s in enumerate(samples):
        alone = eng.generate(collate([s], IDS.pad), 7)
        n = alone.num_generated[0]
        assert batched.num_generated[b] == n
        assert batched.sequences[b, :n].tolist() == alone.sequences[0, :n].tolist()
        assert batched.selected[b] == alone.selected[0]
        assert (batched.first_logits[b] - alone.first_logits[0]).abs().max() < TOL


def test_batched_training_with_different_latent_counts_equals_one_by_one():
    """A sample with fewer latent slots than the batch gets masked dummy chunks: same loss as alone."""
    bb = tiny_backbone(seed=5)
    eng = engine(bb)
    samples = [sample(s, grid=g, n_question=q, n_latent=n, n_rest=r) for s, g, q, n, r in
               [(7, (3, 4), 5, 3, 6), (8, (2, 3), 9, 1, 4), (9, (3, 3), 2, 2, 9), (10, (2, 2), 4, 0, 5)]]
    with torch.no_grad():
        batched = eng.forward(collate(samples, IDS.pad))
        total, count, logits = 0.0, 0, []
        for s in samples:
            alone = eng.forward(collate([s], IDS.pad))
            total += alone.loss.item() * alone.n_tokens
            count += alone.n_tokens
            logits.append(alone.logits)
    assert batched.n_tokens == count
    assert abs(batched.loss.item() - total / count) < TOL
    assert (batched.logits - torch.cat(logits)).abs().max() < TOL


# ------------------------------------------------------------------------------- n = 0 == plain model
@pytest.mark.parametrize("positions", ["sequential", "mrope"])
def test_no_latents_equals_plain_model_loss(positions):
    bb = tiny_backbone(seed=2)
    s = sample(11, grid=(3, 4), n_latent=0, n_rest=7)
    batch = collate([s], IDS.pad)
    with torch.no_grad():
        ours = engine(bb, positions=positions).forward(batch)
        kwargs = {}
        if positions == "sequential":  # the plain model's default is M-RoPE; sequential = 1-D positions
            kwargs["position_ids"] = torch.arange(batch.input_ids.shape[1])[None]
        ref = bb.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels,
                    mm_token_type_ids=(batch.input_ids == IDS.image_pad).long(), **batch.vision, **kwargs)
    keep = batch.labels[0, 1:] != -100
    assert abs(ours.loss.item() - ref.loss.item()) < TOL
    assert (ours.logits - ref.logits[0, :-1][keep]).abs().max() < TOL


def test_no_latents_generation_equals_hf_generate():
    bb = tiny_backbone(seed=4)
    samples = [sample(s, grid=g, n_question=q, n_latent=0) for s, g, q in [(12, (3, 4), 5), (13, (2, 3), 10)]]
    batch = collate(samples, IDS.pad)
    ours = engine(bb, positions="mrope").generate(batch, 8)
    ref = bb.hf_generate(batch.input_ids, batch.attention_mask, batch.vision, 8)[:, batch.input_ids.shape[1]:]
    for b in range(len(samples)):
        n = ours.num_generated[b]
        assert ours.sequences[b, :n].tolist() == ref[b, :n].tolist()


# ------------------------------------------------------------------------------------- gradient modes
def _fed_back_states(eng, batch, monkeypatch):
    """Run a training forward, recording the hidden states the engine feeds back at each latent step."""
    seen = []
    original = LatentEngine._latent_chunk

    def spy(self, seq, *args):
        seen.append(seq.last_hidden)
        return original(self, seq, *args)

    monkeypatch.setattr(LatentEngine, "_latent_chunk", spy)
    out = eng.forward(batch)
    return out, seen


@pytest.mark.parametrize("latent_grad", ["detach", "full"])
def test_gradient_through_fed_back_state(latent_grad, monkeypatch):
    bb = tiny_backbone(lora=True)
    out, states = _fed_back_states(engine(bb, latent_grad=latent_grad), train_batch(), monkeypatch)
    assert len(states) == 3 and all(h.requires_grad for h in states)
    grads = torch.autograd.grad(out.loss, states, allow_unused=True)
    if latent_grad == "detach":
        assert all(g is None or not g.any() for g in grads)  # constants in the backward pass (authors)
    else:
        assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_gradient_modes_agree_on_the_forward_and_differ_on_the_backward():
    bb = tiny_backbone(lora=True)
    batch = train_batch()
    out = {}
    for mode in ("detach", "full"):
        bb.model.zero_grad()
        o = engine(bb, latent_grad=mode).forward(batch)
        o.loss.backward()
        out[mode] = (o.loss.item(), lora_grads(bb))
    assert out["detach"][0] == pytest.approx(out["full"][0], abs=1e-7)
    diff = max((out["detach"][1][n] - out["full"][1][n]).abs().max().item() for n in out["full"][1])
    assert diff > 1e-6


# ---------------------------------------------------------------------------------- ablation switches
def _chunks(eng, batch, monkeypatch):
    chunks = []
    original = LatentEngine._latent_chunk

    def spy(self, *args):
        chunk, mask = original(self, *args)
        chunks.append(chunk.detach())
        return chunk, mask

    monkeypatch.setattr(LatentEngine, "_latent_chunk", spy)
    out = eng.generate(batch, 4)
    monkeypatch.setattr(LatentEngine, "_latent_chunk", original)
    return out, chunks


def test_each_ablation_changes_exactly_what_it_says(monkeypatch):
    bb = tiny_backbone(seed=1)
    batch = collate([sample(21, grid=(3, 4))], IDS.pad)
    full, full_chunks = _chunks(engine(bb), batch, monkeypatch)
    assert [c.shape[1] for c in full_chunks] == [3, 3, 3]  # K image embeddings + h per step

    # latent text off: the slot holds the <|latent|> embedding; the first selection (from the prompt) is unchanged
    no_text, chunks = _chunks(engine(bb, latent_text=False), batch, monkeypatch)
    latent_emb = bb.embed_tokens(torch.tensor([[IDS.latent]]))[0, 0]
    assert all(torch.equal(c[0, -1], latent_emb) for c in chunks)
    assert torch.equal(chunks[0][0, :2], full_chunks[0][0, :2]) and no_text.selected[0][0] == full.selected[0][0]

    # latent vision off: only h per step, nothing selected; the first fed-back state is unchanged
    no_vision, chunks = _chunks(engine(bb, latent_vision=False), batch, monkeypatch)
    assert [c.shape[1] for c in chunks] == [1, 1, 1] and no_vision.selected == [[]]
    assert torch.allclose(chunks[0][0, 0], full_chunks[0][0, -1], atol=TOL)

    # text first: the same embeddings of step 1 in the order [h, z]
    _, chunks = _chunks(engine(bb, order="text_first"), batch, monkeypatch)
    assert torch.equal(chunks[0][0, 0], full_chunks[0][0, -1]) and torch.equal(chunks[0][0, 1:], full_chunks[0][0, :2])

    # patch order: the same set of patches in step 1, in the configured order
    for order in ("reference", "raster"):
        other = engine(bb, patch_order=order).generate(batch, 2)
        assert sorted(other.selected[0][0]) == sorted(full.selected[0][0])
    raster = engine(bb, patch_order="raster").generate(batch, 2)
    assert all(step == sorted(step) for step in raster.selected[0])

    # every switch changes the answer logits
    for kw in ({"latent_text": False}, {"latent_vision": False}, {"order": "text_first"}):
        assert (engine(bb, **kw).generate(batch, 1).first_logits - full.first_logits).abs().max() > 1e-4, kw


def test_patches_are_never_selected_twice():
    bb = tiny_backbone(seed=6)
    out = engine(bb, k=4).generate(collate([sample(30, grid=(3, 4))], IDS.pad), 1)
    picks = [o for step in out.selected[0] for o in step]
    assert len(picks) == 12 and len(set(picks)) == 12 and all(0 <= o < 12 for o in picks)


# ----------------------------------------------------------------------------------------- bad input
def test_too_many_patches_is_a_clear_error():
    bb = tiny_backbone()
    batch = collate([sample(1, grid=(3, 4)), sample(2, grid=(2, 2))], IDS.pad)  # 12 and 4 image tokens
    with pytest.raises(ValueError, match=r"record 's2'.*K x n = 3 x 3 = 9 .* only 4"):
        engine(bb, k=3).generate(batch, 2)


def test_misaligned_latents_are_a_clear_error():
    bb = tiny_backbone()
    batch = collate([sample(1), sample(2, n_question=7)], IDS.pad)
    batch.input_ids = torch.cat([batch.input_ids[:1], batch.input_ids[1:].roll(1, 1)])
    with pytest.raises(ValueError, match="record 's2'.*contiguous and start at index"):
        engine(bb).generate(batch, 2)


def test_labels_on_the_prompt_are_rejected():
    bb = tiny_backbone()
    batch = train_batch()
    batch.labels[0, 5] = 42
    with pytest.raises(ValueError, match="labels must be -100 over the prompt"):
        engine(bb).forward(batch)
