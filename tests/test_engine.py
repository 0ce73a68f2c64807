"""Equivalence tests of the latent engine: every fast path against the slow, obvious one, for every backbone
(Qwen2-VL, Qwen2.5-VL, Chameleon; M-RoPE cases only where the backbone has M-RoPE)."""

from __future__ import annotations

import pytest
import torch

from helpers import KITS
from ivtlr.backbones import backbone_for
from ivtlr.batching import collate
from ivtlr.engine import Intervention, LatentConfig, LatentEngine

TOL = 1e-5
ALL = [pytest.param(kit, id=name) for name, kit in KITS.items()]
WITH_POSITIONS = [pytest.param(kit, positions, id=f"{name}-{positions}") for name, kit in KITS.items()
                  for positions in ("sequential", "mrope") if positions == "sequential" or kit.supports_mrope]


AHEAD = {"order": "text_first", "selection": "ahead"}  # z_t picked by the row of h_t's own slot (outside the method)
SELECTIONS = [pytest.param({}, id="behind"), pytest.param(AHEAD, id="ahead")]


def engine(backbone, **kw):
    return LatentEngine(backbone, LatentConfig(**{"k": 2, **kw}))


def train_batch(kit, seeds=(1, 2, 3), n_latent=(3, 3, 3), grids=((3, 4), (2, 3), (3, 3)), questions=(5, 9, 2)):
    return collate([kit.sample(s, grid=g, n_question=q, n_latent=n, n_rest=6)
                    for s, n, g, q in zip(seeds, n_latent, kit.grids(*grids), questions)], kit.tokens.pad)


def lora_grads(backbone):
    return {n: p.grad.clone() for n, p in backbone.model.named_parameters() if p.grad is not None and "lora" in n}


# ------------------------------------------------------------------------------ cached == recomputed
@pytest.mark.parametrize("options", SELECTIONS)
@pytest.mark.parametrize("kit,positions", WITH_POSITIONS)
def test_cached_generation_equals_recomputation(kit, positions, options):
    bb = kit.backbone()
    grids = kit.grids((3, 4), (2, 3))
    batch = collate([kit.sample(s, grid=g, n_question=q) for s, g, q in zip((1, 2), grids, (5, 9))], kit.tokens.pad)
    fast = engine(bb, positions=positions, **options).generate(batch, 6)
    slow = engine(bb, positions=positions, use_cache=False, **options).generate(batch, 6)
    assert fast.selected == slow.selected
    assert torch.equal(fast.sequences, slow.sequences)
    assert (fast.first_logits - slow.first_logits).abs().max() < TOL


@pytest.mark.parametrize("options", SELECTIONS)
@pytest.mark.parametrize("latent_grad", ["detach", "full"])
@pytest.mark.parametrize("kit", ALL)
def test_cached_training_equals_recomputation_with_lora_gradients(kit, latent_grad, options):
    bb = kit.backbone(lora=True)
    batch = train_batch(kit)
    results = []
    for use_cache in (True, False):
        bb.model.zero_grad()
        out = engine(bb, latent_grad=latent_grad, use_cache=use_cache, **options).forward(batch)
        out.loss.backward()
        results.append((out, lora_grads(bb)))
    (fast, g_fast), (slow, g_slow) = results
    assert fast.selected == slow.selected
    assert (fast.logits - slow.logits).abs().max() < TOL
    assert abs(fast.loss.item() - slow.loss.item()) < TOL
    assert g_fast.keys() == g_slow.keys() and len(g_fast) == 28  # 14 LoRA modules x (A, B), language model only
    for name in g_fast:
        assert (g_fast[name] - g_slow[name]).abs().max() < TOL * max(1.0, g_slow[name].abs().max().item()), name


# ---------------------------------------------------------------------------- batched == one-by-one
@pytest.mark.parametrize("options", SELECTIONS)
@pytest.mark.parametrize("kit,positions", WITH_POSITIONS)
def test_batched_generation_equals_one_by_one(kit, positions, options):
    bb = kit.backbone(seed=3)
    eng = engine(bb, positions=positions, **options)
    grids = kit.grids((3, 4), (2, 3), (4, 4))
    samples = [kit.sample(s, grid=g, n_pre=pre, n_question=q) for s, g, pre, q in
               zip((4, 5, 6), grids, (3, 1, 6), (5, 12, 2))]
    batched = eng.generate(collate(samples, kit.tokens.pad), 7)
    for b, s in enumerate(samples):
        alone = eng.generate(collate([s], kit.tokens.pad), 7)
        n = alone.num_generated[0]
        assert batched.num_generated[b] == n
        assert batched.sequences[b, :n].tolist() == alone.sequences[0, :n].tolist()
        assert batched.selected[b] == alone.selected[0]
        assert (batched.first_logits[b] - alone.first_logits[0]).abs().max() < TOL



# --------------------------------------------------------------------- a shared prefix == its own prefill
SHARED_PREFIX_RUNS = [None, Intervention(state="zero", steps=(2,)), Intervention(state="shuffle"),
                      Intervention(state="noise", steps=(1,)), Intervention(vision="random"),
                      Intervention(vision="lowest", steps=(3,)), Intervention(vision="zero")]


@pytest.mark.parametrize("options", SELECTIONS)
@pytest.mark.parametrize("kit,cache", [pytest.param(kit, cache, id=f"{name}-{cache}") for name, kit in KITS.items()
                                       for cache in ("dynamic", "recompute", "static")])
def test_runs_from_one_shared_prefix_equal_runs_that_prefill(kit, cache, options):
    """Every run of a batch from one ``prefill`` (the analysis' interventions, with the attention measures too)
    gives exactly what a generate that runs its own prompt gives: the prefix is copied, never consumed."""
    bb = kit.backbone(seed=3)
    eng = engine(bb, use_cache=cache != "recompute", decode="compiled" if cache == "static" else "eager", **options)
    samples = [kit.sample(s, grid=g, n_pre=pre, n_question=q, n_latent=n) for s, g, pre, q, n in
               zip((4, 5, 6), kit.grids((3, 4), (2, 3), (4, 4)), (3, 1, 6), (5, 12, 2), (3, 2, 3))]
    batch = collate(samples, kit.tokens.pad)
    prefix = eng.prefill(batch, 5, attention=True)
    for intervention in SHARED_PREFIX_RUNS:
        for attention in (False, True):
            own = eng.generate(batch, 5, intervention=intervention, attention=attention)
            shared = eng.generate(batch, 5, intervention=intervention, attention=attention, prefix=prefix)
            assert torch.equal(own.sequences, shared.sequences) and own.selected == shared.selected
            assert torch.equal(own.first_logits, shared.first_logits), (intervention, attention)
            assert all(torch.equal(a, b) for a, b in zip(own.states, shared.states))
            assert all(torch.equal(a, b) for a, b in zip(own.latent_attention + own.decode_attention,
                                                         shared.latent_attention + shared.decode_attention))
    with pytest.raises(ValueError, match="another batch"):
        eng.generate(collate(samples[:2], kit.tokens.pad), 5, prefix=prefix)
    if cache == "static":
        with pytest.raises(ValueError, match="same max_new_tokens"):
            eng.generate(batch, 6, prefix=prefix)
    with pytest.raises(ValueError, match="positions, use_cache, decode"):
        engine(bb, use_cache=cache == "recompute").generate(batch, 5, prefix=prefix)
    with pytest.raises(ValueError, match="attention=True"):
        engine(bb, k=0).generate(batch, 5, attention=True, prefix=engine(bb, k=0).prefill(batch, 5))

@pytest.mark.parametrize("options", SELECTIONS)
@pytest.mark.parametrize("kit", ALL)
def test_batched_training_with_different_latent_counts_equals_one_by_one(kit, options):
    """A sample with fewer latent slots than the batch gets masked dummy chunks: same loss as alone."""
    bb = kit.backbone(seed=5)
    eng = engine(bb, **options)
    grids = kit.grids((3, 4), (2, 3), (3, 3), (2, 2))
    samples = [kit.sample(s, grid=g, n_question=q, n_latent=n, n_rest=r) for s, g, q, n, r in
               zip((7, 8, 9, 10), grids, (5, 9, 2, 4), (3, 1, 2, 0), (6, 4, 9, 5))]
    with torch.no_grad():
        batched = eng.forward(collate(samples, kit.tokens.pad))
        total, count, logits = 0.0, 0, []
        for s in samples:
            alone = eng.forward(collate([s], kit.tokens.pad))
            total += alone.loss.item() * alone.n_tokens
            count += alone.n_tokens
            logits.append(alone.logits)
    assert batched.n_tokens == count
    assert abs(batched.loss.item() - total / count) < TOL
    assert (batched.logits - torch.cat(logits)).abs().max() < TOL


# ------------------------------------------------------------------------------- n = 0 == plain model
@pytest.mark.parametrize("kit,positions", WITH_POSITIONS)
def test_no_latents_equals_plain_model_loss(kit, positions):
    bb = kit.backbone(seed=2)
    s = kit.sample(11, grid=(3, 4), n_latent=0, n_rest=7)
    batch = collate([s], kit.tokens.pad)
    with torch.no_grad():
        ours = engine(bb, positions=positions).forward(batch)
        kwargs = kit.plain_kwargs(batch.input_ids)
        if positions == "sequential":  # Qwen's plain default is M-RoPE; sequential = 1-D positions
            kwargs["position_ids"] = torch.arange(batch.input_ids.shape[1])[None]
        ref = bb.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels,
                    **batch.vision, **kwargs)
    keep = batch.labels[0, 1:] != -100
    assert abs(ours.loss.item() - ref.loss.item()) < TOL
    assert (ours.logits - ref.logits[0, :-1][keep]).abs().max() < TOL


@pytest.mark.parametrize("kit", ALL)
def test_no_latents_generation_equals_hf_generate(kit):
    bb = kit.backbone(seed=4)
    grids = kit.grids((3, 4), (2, 3))
    samples = [kit.sample(s, grid=g, n_question=q, n_latent=0) for s, g, q in zip((12, 13), grids, (5, 10))]
    batch = collate(samples, kit.tokens.pad)
    # transformers' generate uses the model's own positions: M-RoPE where it exists, else 1-D over real tokens
    ours = engine(bb, positions="mrope" if kit.supports_mrope else "sequential").generate(batch, 8)
    ref = bb.hf_generate(batch.input_ids, batch.attention_mask, batch.vision, 8)[:, batch.input_ids.shape[1]:]
    for b in range(len(samples)):
        n = ours.num_generated[b]
        if ours.sequences[b, n - 1] == kit.tokens.eos:  # hf_generate forces exactly 8 tokens: eos is suppressed
            n -= 1
        assert ours.sequences[b, :n].tolist() == ref[b, :n].tolist()


# ------------------------------------------------------------------------------------- gradient modes
def _fed_back_states(eng, batch, monkeypatch):
    """Run a training forward, recording the hidden states the engine feeds back at each latent step."""
    seen = []
    original = LatentEngine._latent_chunk

    def spy(self, seq, *args, **kw):
        seen.append(seq.last_hidden)
        return original(self, seq, *args, **kw)

    monkeypatch.setattr(LatentEngine, "_latent_chunk", spy)
    out = eng.forward(batch)
    return out, seen


@pytest.mark.parametrize("latent_grad", ["detach", "full"])
@pytest.mark.parametrize("kit", ALL)
def test_gradient_through_fed_back_state(kit, latent_grad, monkeypatch):
    bb = kit.backbone(lora=True)
    out, states = _fed_back_states(engine(bb, latent_grad=latent_grad), train_batch(kit), monkeypatch)
    assert len(states) == 3 and all(h.requires_grad for h in states)
    grads = torch.autograd.grad(out.loss, states, allow_unused=True)
    if latent_grad == "detach":
        assert all(g is None or not g.any() for g in grads)  # constants in the backward pass (authors)
    else:
        assert all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("kit", ALL)
def test_gradient_modes_agree_on_the_forward_and_differ_on_the_backward(kit):
    bb = kit.backbone(lora=True)
    batch = train_batch(kit)
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

    def spy(self, *args, **kw):
        chunk, *rest = original(self, *args, **kw)
        chunks.append(chunk.detach())
        return (chunk, *rest)

    monkeypatch.setattr(LatentEngine, "_latent_chunk", spy)
    out = eng.generate(batch, 4)
    monkeypatch.setattr(LatentEngine, "_latent_chunk", original)
    return out, chunks


@pytest.mark.parametrize("kit", ALL)
def test_each_ablation_changes_exactly_what_it_says(kit, monkeypatch):
    bb = kit.backbone(seed=1)
    batch = collate([kit.sample(21, grid=(3, 4))], kit.tokens.pad)
    full, full_chunks = _chunks(engine(bb), batch, monkeypatch)
    assert [c.shape[1] for c in full_chunks] == [3, 3, 3]  # K image embeddings + h per step

    # latent text off: the slot holds the <|latent|> embedding; the first selection (from the prompt) is unchanged
    no_text, chunks = _chunks(engine(bb, latent_text=False), batch, monkeypatch)
    latent_emb = bb.embed_tokens(torch.tensor([[kit.tokens.latent]]))[0, 0]
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


@pytest.mark.parametrize("kit", ALL)
def test_ahead_selection_picks_with_the_row_of_the_fed_back_states_own_slot(kit, monkeypatch):
    """selection="ahead", recomputed by hand with an eager forward: step 1 appends h_1 (the prompt's last state)
    alone, the top-K of h_1's slot's attention row (mean over layers and heads) are the patches appended after
    it, and the next fed-back state is the last patch's. The authors' selection ranks by the prompt's row."""
    bb = kit.backbone(seed=3)
    batch = collate([kit.sample(21, grid=(3, 4))], kit.tokens.pad)
    out, chunks = _chunks(engine(bb, **AHEAD), batch, monkeypatch)
    assert [c.shape[1] for c in chunks] == [1, 2, 1, 2, 1, 2]  # per step: h_t alone, then its K = 2 patches
    p = int((batch.input_ids[0] == kit.tokens.latent).nonzero()[0])
    model = kit.model(seed=3)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        embeds = bb.embed_inputs(batch.input_ids, batch.vision)

        def run(x):
            n = x.shape[1]
            o = model(inputs_embeds=x, attention_mask=torch.ones(1, n, dtype=torch.long),
                      position_ids=torch.arange(n)[None], output_attentions=True, output_hidden_states=True)
            return o.hidden_states[-1][:, -1], torch.stack([a[:, :, -1] for a in o.attentions]).mean(dim=(0, 2))

        h1, prompt_row = run(embeds[:, :p])
        assert torch.allclose(chunks[0][0, 0], h1[0], atol=1e-5)
        image = bb.image_mask(batch.input_ids[:, :p])[0].nonzero()[:, 0]
        _, row = run(torch.cat([embeds[:, :p], h1[:, None]], 1))
        assert out.selected[0][0] == row[0, image].topk(2).indices.tolist()
        assert torch.equal(chunks[1][0], embeds[0, image[out.selected[0][0]]])
        h2, _ = run(torch.cat([embeds[:, :p], h1[:, None], chunks[1]], 1))
        assert torch.allclose(chunks[2][0, 0], h2[0], atol=1e-5)
    behind = engine(bb, order="text_first").generate(batch, 2)
    assert behind.selected[0][0] == prompt_row[0, image].topk(2).indices.tolist()
    with pytest.raises(ValueError, match="text_first"):
        LatentConfig(selection="ahead")


@pytest.mark.parametrize("kit", ALL)
def test_patches_are_never_selected_twice(kit):
    bb = kit.backbone(seed=6)
    out = engine(bb, k=4).generate(collate([kit.sample(30, grid=(3, 4))], kit.tokens.pad), 1)
    picks = [o for step in out.selected[0] for o in step]
    assert len(picks) == 12 and len(set(picks)) == 12 and all(0 <= o < 12 for o in picks)


# ----------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kit", ALL)
def test_too_many_patches_is_a_clear_error(kit):
    bb = kit.backbone()
    g1, g2 = kit.grids((3, 4), (2, 2))  # Qwen: 12 and 4 image tokens; Chameleon: 12 and 12
    batch = collate([kit.sample(1, grid=g1, n_latent=1), kit.sample(2, grid=g2)], kit.tokens.pad)
    with pytest.raises(ValueError, match=rf"record 's2'.*K x n = 5 x 3 = 15 .* only {g2[0] * g2[1]}"):
        engine(bb, k=5).generate(batch, 2)


@pytest.mark.parametrize("kit", ALL)
def test_misaligned_latents_are_a_clear_error(kit):
    bb = kit.backbone()
    batch = collate([kit.sample(1), kit.sample(2, n_question=7)], kit.tokens.pad)
    batch.input_ids = torch.cat([batch.input_ids[:1], batch.input_ids[1:].roll(1, 1)])
    with pytest.raises(ValueError, match="record 's2'.*contiguous and start at index"):
        engine(bb).generate(batch, 2)


@pytest.mark.parametrize("kit", ALL)
def test_image_placeholders_that_do_not_match_the_image_are_a_clear_error(kit):
    bb = kit.backbone()
    s = kit.sample(1, grid=(3, 4))
    s.vision = kit.image(2, 3, seed=1)  # 6 image tokens for 12 placeholders
    with pytest.raises(ValueError, match="image placeholders and image .* differ: 12 "):
        engine(bb).generate(collate([s], kit.tokens.pad), 2)


@pytest.mark.parametrize("kit", ALL)
def test_image_grids_map_offsets_back_to_the_image(kit):
    bb = kit.backbone()
    assert bb.image_grids(kit.sample(1, grid=(3, 4)).vision) == [(3, 4)]


@pytest.mark.parametrize("kit", ALL)
def test_lora_wraps_the_language_model_only(kit):
    """The authors' targets as a regex: Qwen2.5-VL's vision MLP also has gate/up/down_proj and must stay plain."""
    model = kit.model(lora=True)
    wrapped = [name for name, module in model.named_modules() if hasattr(module, "lora_A")]
    assert len(wrapped) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    assert not [name for name in wrapped if "visual" in name or "vqmodel" in name]


def test_tiny_chameleon_has_the_real_image_geometry_as_an_option():
    from ivtlr.backbones.chameleon import TinyChameleonSpec, build_tiny_chameleon

    kit = KITS["chameleon"]
    spec = TinyChameleonSpec.real_geometry(vocab_size=kit.SPEC.vocab_size, vq_codes=kit.SPEC.vq_codes)
    bb = backbone_for(build_tiny_chameleon(spec, kit.IDS), kit.tokens)
    vision = {"pixel_values": torch.rand(1, 3, spec.vq_resolution, spec.vq_resolution) * 2 - 1}
    assert spec.image_tokens == 1024 and bb.image_grids(vision) == [(32, 32)]
    codes = bb.image_codes(vision["pixel_values"])
    assert codes.shape == (1, 1024) and codes.dtype == torch.long
    assert set(codes.unique().tolist()) <= set(bb.image_code_ids)


@pytest.mark.parametrize("kit", ALL)
def test_labels_on_the_prompt_are_rejected(kit):
    bb = kit.backbone()
    batch = train_batch(kit)
    batch.labels[0, 5] = 42
    with pytest.raises(ValueError, match="labels must be -100 over the prompt"):
        engine(bb).forward(batch)


# ------------------------------------------------------------------------------ gradient checkpointing
@pytest.mark.parametrize("use_cache", [False, True])
@pytest.mark.parametrize("kit", ALL)
def test_layer_checkpointing_with_recomputed_passes_equals_the_cached_engine(kit, use_cache):
    """Checkpointing drops the KV cache in training; the engine's recompute mode gives the same loss and grads
    (asked for, or chosen by the engine itself when the config keeps use_cache on)."""
    bb = kit.backbone(lora=True)
    batch = train_batch(kit)
    bb.model.zero_grad()
    ref = engine(bb).forward(batch)
    ref.loss.backward()
    want = lora_grads(bb)
    bb.model.zero_grad()
    bb.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    bb.model.enable_input_require_grads()
    bb.model.train()
    try:
        out = engine(bb, use_cache=use_cache).forward(batch)
        out.loss.backward()
    finally:
        bb.hf.gradient_checkpointing_disable()
        bb.model.eval()
    got = lora_grads(bb)
    assert abs(out.loss.item() - ref.loss.item()) < TOL
    assert got.keys() == want.keys()
    for name in want:
        assert (got[name] - want[name]).abs().max() < TOL * max(1.0, want[name].abs().max().item()), name


@pytest.mark.parametrize("kit", [pytest.param(k, id=n) for n, k in KITS.items() if n.startswith("qwen")])
def test_matmul_patch_embedding_equals_the_convolution(kit):
    """The engine computes Qwen's patch embedding (a Conv3d whose kernel equals its stride) as a matmul: the same
    image embeddings, parameters and state dict; inputs that are not one patch each still take the convolution."""
    from ivtlr.backbones.qwen2vl import PatchConv3d

    bb = kit.backbone(seed=3)
    proj = bb.hf.model.visual.patch_embed.proj
    assert type(proj) is torch.nn.Conv3d
    batch = collate([kit.sample(4, grid=kit.grids((3, 4))[0])], kit.tokens.pad)
    before_state = {k: v.clone() for k, v in bb.hf.state_dict().items()}
    with torch.no_grad():
        before = bb.embed_inputs(batch.input_ids, batch.vision)
        LatentEngine(bb, LatentConfig(k=2))  # the engine configures its backbone
        assert type(proj) is PatchConv3d
        after = bb.embed_inputs(batch.input_ids, batch.vision)
        assert (after - before).abs().max() <= 1e-5 * before.abs().max()
        assert before_state.keys() == bb.hf.state_dict().keys()
        assert all(torch.equal(v, bb.hf.state_dict()[k]) for k, v in before_state.items())
        wide = torch.randn(1, proj.in_channels, 2, 28, 28)  # two by two patches: the convolution itself
        assert torch.equal(proj(wide), torch.nn.functional.conv3d(wide, proj.weight, proj.bias, proj.stride))


# ------------------------------------------------------------------------------ state dropout (training only)
def test_state_dropout_zeroes_states_only_in_training():
    kit = KITS["qwen2-vl"]
    bb = kit.backbone()
    eng = engine(bb, state_dropout=0.5)
    h = torch.randn(4000, bb.embedding.weight.shape[1]) + 1.0  # no row is zero by chance
    torch.manual_seed(0)
    bb.hf.train()
    out = eng._feedback(h, 1, None)
    dropped = (out == 0).all(-1)
    assert 0.45 < dropped.float().mean() < 0.55  # each sample's state dropped with probability 0.5
    assert torch.equal(out[~dropped], h[~dropped])  # the others pass unchanged
    with torch.no_grad():  # validation inside a training run
        assert torch.equal(eng._feedback(h, 1, None), h)
    bb.hf.eval()
    assert torch.equal(eng._feedback(h, 1, None), h)
    assert torch.equal(engine(bb)._feedback(h, 1, None), h)  # the default drops nothing


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_state_dropout_out_of_range_is_refused(p):
    with pytest.raises(ValueError, match="state_dropout"):
        LatentConfig(state_dropout=p)


# ------------------------------------------------------------------------------ the selection's attention row
@pytest.mark.parametrize("kit", ALL)
def test_captured_row_of_a_cached_chunk_equals_eager_attention(kit):
    """The row the selection ranks by, captured on a KV cache after a left-padded prompt (grouped key heads, the
    chunk's own causal mask), equals the mean over layers and heads of an eager forward's attention maps."""
    from ivtlr.engine import _Sequence

    bb = engine(kit.backbone(seed=3)).backbone  # configured: the capture backend
    batch = collate([kit.sample(s, n_question=q) for s, q in ((1, 2), (2, 7))], kit.tokens.pad)  # padded: 5 apart
    p = int((batch.input_ids[0] == kit.tokens.latent).nonzero()[0])
    mask = batch.attention_mask[:, :p]
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[None]
    torch.manual_seed(0)
    with torch.no_grad():
        prompt = bb.embed_inputs(batch.input_ids, batch.vision)[:, :p]
        chunk = torch.randn(2, 3, prompt.shape[-1]) * prompt.norm(dim=-1).mean()
        seq = _Sequence(bb, use_cache=True)
        seq.forward(prompt, mask, positions)
        _, row = seq.forward(chunk, torch.ones(2, 3), record=True)
        model = kit.model(seed=3)
        model.set_attn_implementation("eager")
        full_mask = torch.cat([mask, torch.ones(2, 3, dtype=mask.dtype)], 1)
        out = model(inputs_embeds=torch.cat([prompt, chunk], 1), attention_mask=full_mask,
                    position_ids=(full_mask.long().cumsum(-1) - 1).clamp(min=0), output_attentions=True)
    expected = torch.stack([a[:, :, -1] for a in out.attentions]).mean(dim=(0, 2))  # (B, p + 3)
    assert row.shape == expected.shape
    assert torch.allclose(row, expected, atol=1e-6)
    assert bool((row[0, :5] == 0).all()) and bool((row[1] > 0).all())  # the padding gets nothing


def test_mean_last_row_groups_heads_and_masks_each_layer_as_its_own():
    """Layers with their own masks (or none: every key), grouped key heads (query head h reads key head
    h // groups), float32 softmax rows averaged over layers and heads: against a per-layer loop."""
    from ivtlr.attention import LastRow, mean_last_row

    g = torch.Generator().manual_seed(0)
    B, H, Hkv, L, Dh = 2, 4, 2, 7, 8
    masks = [None, torch.rand(B, 1, 3, L, generator=g) > 0.3, torch.rand(B, 1, 3, L, generator=g) > 0.5]
    for m in masks[1:]:
        m[..., -1, 0] = True  # every row attends to something
    rows = [LastRow(torch.randn(B, H, 1, Dh, generator=g), torch.randn(B, Hkv, L, Dh, generator=g), m, 0.3, H // Hkv)
            for m in masks]
    expected = []
    for r in rows:
        s = r.query @ r.key.repeat_interleave(H // Hkv, dim=1).transpose(-1, -2) * r.scale  # (B, H, 1, L)
        if r.mask is not None:
            s = s.masked_fill(~r.mask[:, :, -1:], float("-inf"))
        expected.append(s.softmax(-1)[:, :, 0])
    assert torch.allclose(mean_last_row(rows), torch.stack(expected).mean(dim=(0, 2)), atol=1e-6)
    with pytest.raises(RuntimeError, match="no attention rows"):
        mean_last_row([])
