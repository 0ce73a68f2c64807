"""`ivtlr analyze`: hit rates from hand-built selections, probes on separable and random data, each causal
intervention changing exactly what it names (every backbone), the synth judge, and the analysis end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers import KITS
from ivtlr.analyze import cover_chance, fit_probe, hit_rates, token_cells
from ivtlr.batching import collate
from ivtlr.data.synth import StepTruth, SynthConfig, make_example, render, step_truth
from ivtlr.engine import Intervention, LatentConfig, LatentEngine
from ivtlr.tasks import rationale_to_steps

ALL = [pytest.param(kit, id=name) for name, kit in KITS.items()]


# ------------------------------------------------------------------------------------------- hit rates
def truth(path, cells=None):
    cells = cells or ((path[0],), tuple(path[1:-1]), (path[-1],))
    return StepTruth(3, tuple(path), cells, ("a", "b", "c"), "c")


def test_hit_rate_of_a_hand_built_selection():
    truths = [truth([4, 0, 8]), truth([1, 2, 3]), truth([5, 6, 7]), truth([0, 1, 2])]
    # step 1 picks the start cell in 3 of 4 questions; step 2 the hop-1 cell in 2; step 3 the hop-2 cell in 1
    selected = [[[4], [0], [8]], [[1], [5], [0]], [[5], [7], [3]], [[8], [1], [0]]]
    hr = hit_rates(selected, truths, [(3, 3)] * 4)
    assert hr["by_step"][0] == [0.75, 0.0, 0.0]
    assert hr["by_step"][1] == [0.0, 0.5, 0.25]
    assert hr["by_step"][2] == [0.25, 0.0, 0.25]
    assert hr["by_chain"][0] == hr["by_step"][0]  # one cell per rationale step: the same table
    assert hr["chance"] == [pytest.approx(1 / 9)] * 3


def test_hit_rate_with_k_tokens_and_several_tokens_per_cell():
    # K = 2 of 9 tokens: chance 2/9; one selection can cover the cells of two rationale steps
    hr = hit_rates([[[4, 0]], [[3, 5]]], [truth([4, 0, 8]), truth([1, 2, 3])], [(3, 3)] * 2)
    assert hr["by_step"][0] == [0.5, 0.5, 0.5] and hr["chance"][0] == pytest.approx(2 / 9)
    # 6x6 tokens on a 3x3 board (2x2 tokens per cell, as Chameleon's VQ grid): tokens 0, 1, 6, 7 are cell 0
    assert token_cells([0, 1, 6, 7], (6, 6), 3) == {0}
    assert token_cells([35], (6, 6), 3) == {8} and token_cells([2, 15], (6, 6), 3) == {1, 4}
    hr = hit_rates([[[0, 1]]], [truth([0, 4, 8])], [(6, 6)])
    assert hr["by_step"][0][0] == 1.0 and hr["chance"][0] == pytest.approx(cover_chance(36, 2, 4))


def test_cover_chance_is_hypergeometric():
    assert cover_chance(9, 3, 1) == pytest.approx(3 / 9)
    assert cover_chance(36, 2, 4) == pytest.approx(1 - math.comb(32, 2) / math.comb(36, 2))
    assert cover_chance(9, 9, 1) == 1.0 and cover_chance(9, 0, 1) == 0.0


# --------------------------------------------------------------------------------------------- probes
def test_probe_reads_a_linear_code_and_not_noise():
    g = torch.Generator().manual_seed(0)
    labels = [i % 4 for i in range(400)]
    centres = torch.randn(4, 16, generator=g) * 3
    x = centres[torch.tensor(labels)] + torch.randn(400, 16, generator=g)
    good = fit_probe(x[:300], labels[:300], x[300:], labels[300:])
    assert good["accuracy"] > 0.95 and good["classes"] == 4
    noise = torch.randn(400, 16, generator=g)
    bad = fit_probe(noise[:300], labels[:300], noise[300:], labels[300:])
    assert bad["accuracy"] < 0.45 and bad["majority"] == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------- interventions
def _spy(eng, batch, monkeypatch, intervention=None):
    """Generate, recording each latent step's chunk and the score rows and picks the selection saw."""
    chunks, seen = [], []
    chunk_fn, select_fn = LatentEngine._latent_chunk, LatentEngine._select

    def chunk_spy(self, *args, **kw):
        chunk, *rest = chunk_fn(self, *args, **kw)
        chunks.append(chunk.detach().clone())
        return (chunk, *rest)

    def select_spy(self, scores, layout, picked, *args):
        seen.append(([scores[b, pos].clone() for b, pos in enumerate(layout.image_pos)], [p.clone() for p in picked]))
        return select_fn(self, scores, layout, picked, *args)

    monkeypatch.setattr(LatentEngine, "_latent_chunk", chunk_spy)
    monkeypatch.setattr(LatentEngine, "_select", select_spy)
    out = eng.generate(batch, 3, intervention=intervention)
    monkeypatch.setattr(LatentEngine, "_latent_chunk", chunk_fn)
    monkeypatch.setattr(LatentEngine, "_select", select_fn)
    return out, chunks, seen


@pytest.mark.parametrize("kit", ALL)
def test_each_intervention_changes_exactly_what_it_names(kit, monkeypatch):
    bb = kit.backbone(seed=3)
    eng = LatentEngine(bb, LatentConfig(k=2))
    grids = kit.grids((3, 4), (3, 4), (3, 4))
    batch = collate([kit.sample(s, grid=g) for s, g in zip((40, 41, 42), grids)], kit.tokens.pad)
    base, base_chunks, base_seen = _spy(eng, batch, monkeypatch)

    # h_2 replaced: steps 1 and 2 select the same patches; chunk 1 is unchanged, chunk 2 differs only in its h
    for state in ("zero", "shuffle", "noise"):
        out, chunks, _ = _spy(eng, batch, monkeypatch, Intervention(state=state, steps=(2,)))
        assert [s[:2] for s in out.selected] == [s[:2] for s in base.selected]
        assert torch.equal(chunks[0], base_chunks[0]) and torch.equal(chunks[1][:, :2], base_chunks[1][:, :2])
        h, h0 = chunks[1][:, -1], base_chunks[1][:, -1]
        if state == "zero":
            assert not h.any()
        elif state == "shuffle":
            assert torch.equal(h, h0.roll(1, dims=0))
        else:
            assert torch.allclose(h.norm(dim=-1), h0.norm(dim=-1), rtol=1e-4) and not torch.allclose(h, h0)
        assert (out.first_logits - base.first_logits).abs().max() > 1e-5, state

    # latent vision replaced at every step: the fed-back states of step 1 are unchanged; no patch twice
    out, chunks, seen = _spy(eng, batch, monkeypatch, Intervention(vision="lowest"))
    for b in range(3):
        scores = seen[0][0][b]
        assert sorted(out.selected[b][0]) == sorted(scores.topk(2, largest=False).indices.tolist())
        picks = [o for step in out.selected[b] for o in step]
        assert len(set(picks)) == len(picks) == 6
    assert torch.equal(chunks[0][:, -1], base_chunks[0][:, -1])
    random_1 = _spy(eng, batch, monkeypatch, Intervention(vision="random", steps=(1,), seed=5))[0]
    random_2 = _spy(eng, batch, monkeypatch, Intervention(vision="random", steps=(1,), seed=6))[0]
    assert random_1.selected != random_2.selected  # different draws (9 pairs of 12 tokens)
    assert random_1.selected == _spy(eng, batch, monkeypatch, Intervention(vision="random", steps=(1,), seed=5))[0].selected

    # zero vectors in the slots of step 2: the same selection, chunk 2's image part zero and its h unchanged
    out, chunks, _ = _spy(eng, batch, monkeypatch, Intervention(vision="zero", steps=(2,)))
    assert out.selected[0][:2] == base.selected[0][:2] and torch.equal(chunks[0], base_chunks[0])
    assert not chunks[1][:, :2].any() and torch.equal(chunks[1][:, -1], base_chunks[1][:, -1])
    assert (out.first_logits - base.first_logits).abs().max() > 1e-5


def test_shuffle_needs_two_questions_and_steps_are_one_based():
    kit = KITS["qwen2-vl"]
    eng = LatentEngine(kit.backbone(), LatentConfig(k=2))
    with pytest.raises(ValueError, match="at least 2"):
        eng.generate(collate([kit.sample(1)], kit.tokens.pad), 2, intervention=Intervention(state="shuffle"))
    with pytest.raises(ValueError, match="1-based"):
        Intervention(state="zero", steps=(0,))
    with pytest.raises(ValueError):
        Intervention(state="swap")


def test_feedback_norm_scales_the_fed_back_state_to_the_embeddings(monkeypatch):
    kit = KITS["qwen2-vl"]
    bb = kit.backbone(seed=2)
    batch = collate([kit.sample(s) for s in (1, 2)], kit.tokens.pad)
    _, raw, _ = _spy(LatentEngine(bb, LatentConfig(k=2)), batch, monkeypatch)
    _, scaled, _ = _spy(LatentEngine(bb, LatentConfig(k=2, feedback_norm="embedding")), batch, monkeypatch)
    target = bb.embedding.weight.norm(dim=-1).mean()
    assert torch.allclose(scaled[0][:, -1].norm(dim=-1), target.expand(2), rtol=1e-4)
    assert torch.allclose(scaled[0][:, -1] / scaled[0][:, -1].norm(dim=-1, keepdim=True),
                          raw[0][:, -1] / raw[0][:, -1].norm(dim=-1, keepdim=True), atol=1e-5)
    assert raw[0][:, -1].norm(dim=-1).min() > 5 * target  # the raw state is much longer than a token embedding


# ------------------------------------------------------------------------------------------ ground truth
@pytest.mark.parametrize("knobs", [{}, {"hops": 3}, {"step_style": "content_first", "palette": "wheel"},
                                   {"image_size": 168, "dot_style": "quadrant"}, {"dot_style": "large"}])
def test_step_truth_from_pixels_matches_the_generator(knobs):
    cfg = SynthConfig(**knobs)
    for i in range(12):
        ex = make_example(cfg, 3, "test", i)
        image = render(ex.scene, cfg.cell, cfg.palette_rgb, cfg.dot_style)
        category = f"dots-grid{cfg.grid}-hops{cfg.hops}"
        tr = step_truth(image, category, ex.kind, ex.choices["ABCDEFGHIJ".index(ex.answer)])
        assert tr.path == ex.path and tr.cells[0] == (ex.path[0],) and tr.cells[1] == ex.path[1:-1]
        assert tr.content[0] == ex.scene.dots[ex.path[0]] and tr.content[2] == ex.scene.dots[ex.path[-1]]
        if ex.kind == "dot-match":
            assert len(tr.cells[2]) == 2
    with pytest.raises(ValueError, match="the record says"):
        step_truth(image, category, ex.kind, "not-the-answer")
    with pytest.raises(ValueError, match="category"):
        step_truth(image, "grid3", ex.kind)


@pytest.mark.parametrize("style", ["pairs", "template", "content_first"])
def test_step_per_read_writes_one_step_per_chain_cell(tmp_path, style):
    """step_per_read: the rationale has hops + 1 sentences, the synth task keeps them as steps (the authors' split
    would merge them into 3), and the ground truth names one cell per step; with 2 hops it is the default text."""
    from ivtlr.data.synth import generate
    from ivtlr.tasks import get_task

    knobs = dict(step_style=style, palette="wheel", fixed_options=True, kinds=("dot-colour",))
    for i in range(6):
        per_read = make_example(SynthConfig(hops=2, step_per_read=True, **knobs), 5, "test", i)
        assert per_read.rationale == make_example(SynthConfig(hops=2, **knobs), 5, "test", i).rationale
    generate(tmp_path / "d", 4, 6, seed=2, n_val=0, hops=4, step_per_read=True, **knobs)
    task = get_task("synth")
    for ex in task.load(tmp_path / "d", "test"):
        steps, truth = task.steps(ex), task.step_truth(ex)
        assert len(steps) == 5 and len(rationale_to_steps(ex.rationale)) == 3  # the authors' split merges them
        assert truth.cells == tuple((c,) for c in truth.path) and len(truth.content) == 5
        for step, cell, content in zip(steps, truth.path, truth.content):
            assert content in step  # each step names what it reads
        assert truth.content[-1] == ex.choices[ex.answer_index]
    with pytest.raises(ValueError, match="dots family only"):
        SynthConfig(family="arrows", step_per_read=True)


# ------------------------------------------------------------------------------------------------ judge
def test_synth_judge_reads_every_option_letter(tmp_path):
    from ivtlr.data.synth import generate
    from ivtlr.tasks import get_task
    from ivtlr.tasks import score_file

    generate(tmp_path / "d", 4, 60, seed=0, fixed_options=True)
    task = get_task("synth")
    examples = task.load(str(tmp_path / "d"), "test")
    assert any(ex.answer_letter in "GHI" for ex in examples)  # 9-option questions answered G-I
    perfect = tmp_path / "perfect.jsonl"
    task.write_predictions(perfect, [(ex, "Therefore, the answer is " + ex.answer_letter) for ex in examples])
    result = score_file(perfect, judge="all", task="synth", quiet=True)
    assert result["overall"]["official_az"]["accuracy"] == 1.0
    assert result["overall"]["official"]["accuracy"] < 1.0  # M3CoT's judge stops at F, unchanged
    wrong = tmp_path / "wrong.jsonl"
    task.write_predictions(wrong, [(ex, "Therefore, the answer is " + ("A" if ex.answer_letter != "A" else "B"))
                                   for ex in examples])
    assert score_file(wrong, judge="official_az", task="synth", quiet=True)["overall"]["official_az"]["accuracy"] == 0


@pytest.mark.parametrize("family", ["dots", "arrows"])
def test_answer_lead_targets_open_with_the_content_and_score_perfectly(tmp_path, family):
    from ivtlr.data.synth import generate
    from ivtlr.tasks import get_task, score_file

    generate(tmp_path / "lead", 4, 40, seed=1, family=family, answer_lead=True)
    generate(tmp_path / "plain", 4, 40, seed=1, family=family)
    task = get_task("synth")
    lead, plain = task.load(str(tmp_path / "lead"), "test"), task.load(str(tmp_path / "plain"), "test")
    for a, b in zip(lead, plain):
        assert task.answer_text(b) == "Therefore, the answer is " + b.answer_letter
        assert task.answer_text(a) == f"{a.choices[a.answer_index]}. Therefore, the answer is {a.answer_letter}"
    perfect = tmp_path / "perfect.jsonl"
    task.write_predictions(perfect, [(ex, task.answer_text(ex)) for ex in lead])
    result = score_file(perfect, judge="all", task="synth", quiet=True)
    assert result["overall"]["official_az"]["accuracy"] == 1.0
    assert result["overall"]["reference"]["accuracy"] == 1.0
    # the content is read first (M3CoT's procedure): a wrong colour with the right letter is wrong
    wrong = tmp_path / "wrong.jsonl"
    task.write_predictions(wrong, [(ex, f"{ex.choices[ex.answer_index - 1]}. Therefore, the answer is {ex.answer_letter}")
                                   for ex in lead])
    assert score_file(wrong, judge="official_az", task="synth", quiet=True)["overall"]["official_az"]["accuracy"] == 0


def test_step_match_by_source_finds_the_one_colour_a_chain_of_thought_cannot_look_up(tmp_path):
    """A hand-made chain of thought, right everywhere except on the steps that have to find one colour's cell:
    that colour scores 0% and every other 100%; a question whose first step is wrong counts nowhere."""
    from ivtlr.analyze import step_match_by_source
    from ivtlr.data.synth import generate
    from ivtlr.tasks import get_task

    generate(tmp_path / "d", 4, 60, seed=0, fixed_options=True, step_style="pairs", palette="wheel")
    task = get_task("synth")
    examples = task.load(str(tmp_path / "d"), "test")
    truths = [task.step_truth(ex) for ex in examples]
    lost = truths[0].content[0]  # the colour whose cell this model cannot find
    outputs, expected = [], {}
    for i, (ex, tr) in enumerate(zip(examples, truths)):
        steps = [g.strip() for g in task.steps(ex)]
        if i == 1:  # its first step is wrong: no later step of it counts
            outputs.append("\n".join(["wrong"] + steps[1:]))
            continue
        for j in range(1, len(steps)):
            source = tr.content[j - 1]
            expected.setdefault(source, [0, 0])[1] += 1
            if source == lost:
                steps[j] = "blank"
                break  # the next step starts from a wrong step: it does not count
            expected[source][0] += 1
        outputs.append("\n".join(steps + [task.answer_text(ex)]))
    table = step_match_by_source(task, examples, truths, outputs)
    assert {c: [v["right"], v["of"]] for c, v in table.items()} == expected
    assert next(iter(table)) == lost and table[lost]["right"] == 0 < table[lost]["of"]
    assert sum(v["of"] for v in table.values()) < 2 * len(examples)


def test_a_broken_generator_config_is_named(tmp_path):
    from ivtlr.data.synth import generate
    from ivtlr.tasks import get_task

    generate(tmp_path / "d", 2, 2, seed=0)
    (tmp_path / "d" / "synth_config.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="synth_config.json"):
        get_task("synth").load(str(tmp_path / "d"), "test")


def test_runs_on_shared_prompt_passes_equal_one_predict_per_run(qwen_checkpoint, synth_dir):
    """``predict_runs`` (one prompt pass per batch for every intervention, as the analysis runs them) gives the
    records of one ``predict`` per run: the same outputs, steps, selections and kept states."""
    from ivtlr.curriculum import encode_example
    from ivtlr.evaluate import predict, predict_runs
    from ivtlr.inference import load_inference
    from ivtlr.tasks import get_task

    inf = load_inference(qwen_checkpoint)
    examples = list(get_task("synth").load(str(synth_dir), "train"))[:10]
    enc = [encode_example(inf.task, inf.encoder, ex, inf.tokens.image) for ex in examples]
    runs = {"base": None, "zero/1": Intervention(state="zero", steps=(1,)), "shuffle/all": Intervention(state="shuffle"),
            "random/2": Intervention(vision="random", steps=(2,)), "lowest/all": Intervention(vision="lowest")}
    shared = predict_runs(inf.engine, inf.encoder, enc, 2, 6, runs, batch_size=4, keep_states=True)
    assert list(shared) == list(runs)
    for name, intervention in runs.items():
        alone = predict(inf.engine, inf.encoder, enc, 2, 6, 4, intervention=intervention,
                        keep_states=intervention is None)
        assert [(r.id, r.output, r.n_generated, r.selected) for r in shared[name]] == \
               [(r.id, r.output, r.n_generated, r.selected) for r in alone], name
        for a, b in zip(shared[name], alone):
            assert (a.states is None) == (b.states is None) and (a.states is None or torch.equal(a.states, b.states))
    assert shared["lowest/all"][0].selected != shared["base"][0].selected  # the runs differ from each other

# ------------------------------------------------------------------------------------------- end to end
def test_analyze_end_to_end_on_a_tiny_run(tmp_path):
    """A two-stage tiny run (a few steps: nothing is learnt), then `ivtlr analyze` on it: every section."""
    import subprocess
    import sys

    from ivtlr.data.synth import generate

    generate(tmp_path / "d", 24, 8, seed=0, fixed_options=True, step_style="content_first")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ivtlr.commands", "train", "--data.source", str(tmp_path / "d"), "--data.val_size", "0",
           "--model.tiny_hidden", "32", "--model.tiny_layers", "1", "--model.tiny_heads", "2",
           "--curriculum.epochs_per_stage", "1", "--curriculum.max_latent_stage", "2", "--latent.k", "1",
           "--optim.batch_size", "8", "--run.keep_last", "5", "--run.out_dir", str(run), "--no-run.progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpts = sorted((run / "checkpoints").iterdir())
    done = subprocess.run([sys.executable, "-m", "ivtlr.commands", "analyze", "--checkpoint", str(ckpts[-1]),
                           "--n-test", "8", "--n-train", "16", "--batch-size", "4", "--out", str(tmp_path / "a")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert result["n_latents"] == 2 and result["k"] == 1
    assert len(result["hit_rates"]["by_step"]) == 2 and len(result["hit_rates"]["by_step"][0]) == 3
    assert set(result["probes"]) == {"answer", "step 1 content", "step 2 content", "step 3 content"}
    assert set(result["interventions"]) == {"h_zero", "h_shuffle", "h_noise", "vision_random", "vision_lowest",
                                            "vision_zero"}
    assert set(result["interventions"]["h_zero"]) == {"1", "2", "all"}
    assert len(result["cot"]["exact_match"]) == 3 and len(result["scales"]["h_raw"]) == 2
    assert "by_source" in result["cot"]  # the synthetic benchmark has ground truth
    for png in ("hit_rates.png", "probes.png", "interventions.png"):
        assert (tmp_path / "a" / png).stat().st_size > 1000
    assert "Selection hit rate" in (tmp_path / "a" / "analysis.md").read_text()


def test_attention_measures_of_a_hand_set_row():
    from ivtlr.attention import attention_measures

    # keys: 2 image tokens, 2 text tokens, 1 padding (weight 0); row 2 is uniform over its 4 real keys
    row = torch.tensor([[0.5, 0.3, 0.1, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25, 0.0]])
    vision = torch.tensor([[True, True, False, False, False]] * 2)
    ratio, focus, uniform_ratio, uniform_focus = attention_measures(row, vision).unbind(-1)
    assert torch.allclose(ratio, torch.tensor([0.8 / 0.2, 1.0]))
    h0 = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 2 * 0.1 * math.log(0.1))
    assert torch.allclose(focus, torch.tensor([1 / h0, 1 / math.log(4)]))
    assert torch.allclose(uniform_ratio, torch.ones(2)) and torch.allclose(uniform_focus, torch.full((2,), 1 / math.log(4)))
    keys = torch.tensor([[True, True, True, True, True]] * 2)  # the padding counted as a key with zero weight
    assert torch.allclose(attention_measures(row, vision, keys)[:, 3], torch.full((2,), 1 / math.log(5)))


@pytest.mark.parametrize("name", list(KITS))
def test_generate_reports_attention_per_latent_step_and_token(name):
    from ivtlr.attention import attention_measures

    kit = KITS[name]
    eng = LatentEngine(kit.backbone(seed=3), LatentConfig(k=2))
    batch = collate([kit.sample(s) for s in (1, 2)], kit.tokens.pad)
    plain, seen = eng.generate(batch, 4), eng.generate(batch, 4, attention=True)
    assert torch.equal(plain.sequences, seen.sequences) and plain.selected == seen.selected  # analysis changes nothing
    assert len(seen.latent_attention) == 3 and all(m.shape == (2, 4) for m in seen.latent_attention)
    assert len(seen.decode_attention) == seen.sequences.shape[1] - 1
    assert all(bool((m > 0).all()) for m in seen.latent_attention + seen.decode_attention)
    # latent step 1 reads the prompt's last row: its measures from an eager forward's attention maps, by hand
    p = int((batch.input_ids[0] == kit.tokens.latent).nonzero()[0])
    model = kit.model(seed=3)
    model.set_attn_implementation("eager")
    ids, mask = batch.input_ids[:, :p], batch.attention_mask[:, :p]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, **batch.vision, **kit.plain_kwargs(ids), output_attentions=True)
    row = torch.stack([a[:, :, -1] for a in out.attentions]).mean(dim=(0, 2))  # (B, p) over layers and heads
    expected = attention_measures(row, (ids == kit.tokens.image) & mask.bool())
    assert torch.allclose(seen.latent_attention[0], expected, rtol=1e-3)
