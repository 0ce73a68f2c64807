"""The curriculum's samples at each stage, truncation, stage mixing, and the collator's alignment."""

from __future__ import annotations


import pytest

from ivtlr.batching import Sample, collate
from ivtlr.config import CurriculumConfig
from ivtlr.curriculum import Curriculum, EncodedExample, inference_sample

LATENT = 9


def example(n_steps=3, prompt=(1, 2, 3, 4), id="r1") -> EncodedExample:
    steps = [[10 + i, 20 + i, 30] for i in range(n_steps)]  # each step's ids end with a newline id (30)
    return EncodedExample(id, list(prompt), list(prompt), {}, steps, [40, 41, 42, 2], n_image_tokens=9)


@pytest.mark.parametrize("stage,n", [(0, 0), (1, 1), (2, 2), (3, 3)])
def test_stage_s_replaces_the_first_s_steps(stage, n):
    ex = example()
    s = Curriculum(CurriculumConfig(), LATENT).sample(ex, stage)
    rest = [t for step in ex.step_ids[n:] for t in step] + ex.answer_ids
    assert s.input_ids == ex.prompt_ids + [LATENT] * n + rest
    assert s.labels == [-100] * (len(ex.prompt_ids) + n) + rest
    assert s.prompt_len == len(ex.prompt_ids)


def test_fewer_steps_than_the_stage_and_padding_to_max():
    ex = example(n_steps=1)
    assert Curriculum(CurriculumConfig(), LATENT).sample(ex, 3).input_ids.count(LATENT) == 1
    padded = Curriculum(CurriculumConfig(pad_latent_to_max=True), LATENT).sample(ex, 3)
    assert padded.input_ids.count(LATENT) == 3 and padded.input_ids[-4:] == ex.answer_ids


def test_no_cot_trains_prompt_then_answer():
    ex = example()
    s = Curriculum(CurriculumConfig(no_cot=True), LATENT).sample(ex, 0)
    assert s.input_ids == ex.prompt_ids + ex.answer_ids


def test_truncation_drops_trailing_steps_never_the_answer():
    ex = example()
    cur = Curriculum(CurriculumConfig(), LATENT, max_length=4 + 3 + 4)  # prompt + one step + answer
    s = cur.sample(ex, 0)
    assert s.input_ids == ex.prompt_ids + ex.step_ids[0] + ex.answer_ids and cur.truncated == 1
    with pytest.raises(ValueError, match="record 'r1'.*exceeds max_length 7"):
        Curriculum(CurriculumConfig(), LATENT, max_length=7).sample(ex, 0)


def test_stage_mixing_is_seeded_and_only_goes_back():
    cur = Curriculum(CurriculumConfig(stage_mix_prob=0.5), LATENT, seed=3)
    counts = [cur.sample(example(), 3, cur.mixing_rng(step)).input_ids.count(LATENT) for step in range(200)]
    again = [cur.sample(example(), 3, cur.mixing_rng(step)).input_ids.count(LATENT) for step in range(200)]
    assert counts == again and set(counts) == {0, 1, 2, 3} and 70 < counts.count(3) < 130


def test_stage_ahead_builds_early_stages_at_the_last_stage():
    cur = Curriculum(CurriculumConfig(stage_ahead_prob=0.3, stage_mix_prob=0.5, max_latent_stage=3), LATENT, seed=3)
    counts = [cur.sample(example(), 1, cur.mixing_rng(step)).input_ids.count(LATENT) for step in range(300)]
    assert set(counts) == {0, 1, 3} and 60 < counts.count(3) < 120  # ahead 30%, else mixing back half the time
    last = [cur.sample(example(), 3, cur.mixing_rng(step)).input_ids.count(LATENT) for step in range(100)]
    assert set(last) == {0, 1, 2, 3}  # the last stage only mixes back


def test_stage_of_epoch():
    cfg = CurriculumConfig(epochs_per_stage=2, max_latent_stage=3, extra_epochs=1)
    assert [cfg.stage(e) for e in range(cfg.total_epochs)] == [0, 0, 1, 1, 2, 2, 3, 3, 3]
    assert [e for e in range(cfg.total_epochs) if cfg.is_stage_end(e)] == [1, 3, 5, 8]
    longer_cot = CurriculumConfig(epochs_per_stage=1, cot_epochs=3, max_latent_stage=2)
    assert [longer_cot.stage(e) for e in range(longer_cot.total_epochs)] == [0, 0, 0, 1, 2]
    assert [e for e in range(longer_cot.total_epochs) if longer_cot.is_stage_start(e)] == [0, 3, 4]
    later = CurriculumConfig(epochs_per_stage=2, max_latent_stage=3, first_stage=2)
    assert [later.stage(e) for e in range(later.total_epochs)] == [2, 2, 3, 3]


def test_collator_aligns_the_first_latent_slot_and_pads():
    a = Sample([5, 6, LATENT, LATENT, 7, 2], 2, [-100, -100, -100, -100, 7, 2], id="a")
    b = Sample([5, 6, 6, 6, 6, LATENT, 7, 7, 7, 2], 5, [-100] * 6 + [7, 7, 7, 2], id="b")
    batch = collate([a, b], pad_id=0)
    ids, mask, labels = batch.input_ids, batch.attention_mask, batch.labels
    assert ids.shape == (2, 10)
    assert ids[0, 5] == ids[1, 5] == LATENT  # first latent slot at the same index
    assert ids[0].tolist() == [0, 0, 0, 5, 6, LATENT, LATENT, 7, 2, 0]
    assert mask[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 0]
    assert labels[0].tolist() == [-100] * 7 + [7, 2, -100]
    assert batch.ids == ["a", "b"]


def test_inference_sample_appends_n_latent_slots():
    s = inference_sample(example(), 3, LATENT)
    assert s.input_ids == [1, 2, 3, 4, LATENT, LATENT, LATENT] and s.labels is None and s.prompt_len == 4
