"""Model selection by validation in the trainer: ``curriculum.stop_at`` ends a stage early, ``curriculum.keep_best``
ends it with its best-validated weights. Validation accuracies are scripted per step (the real validation of an
untrained tiny model is 0%), everything else is the real trainer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ivtlr.config import TrainConfig
from ivtlr.data.synth import generate
from ivtlr.train import Trainer


@pytest.fixture(scope="module")
def synth_val(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth-val")
    generate(out, n_train=48, n_test=4, seed=3, n_val=4)
    return out


def config(data, out, **curriculum) -> TrainConfig:
    return TrainConfig.from_dict({
        "model": {"tiny_hidden": 32, "tiny_layers": 2, "tiny_heads": 2, "tiny_vision_depth": 1, "tiny_vocab": 300},
        "data": {"task": "synth", "source": str(data), "val_split": "validation", "val_size": 4},
        "curriculum": {"epochs_per_stage": 1, "max_latent_stage": 1, "stage_epochs": [2], **curriculum},
        "optim": {"lr": 3e-3, "batch_size": 2},
        "latent": {"k": 2},
        "run": {"out_dir": str(out), "progress": False, "val_every": 8, "save_every": 56, "keep_last": 10},
    })


def scripted(monkeypatch, accuracies: dict[int, float]) -> list[int]:
    """Validation returns ``accuracies[step]`` (0.1 elsewhere); returns the list of validated steps."""
    seen = []

    def validate(self, stage):
        seen.append(self.pos.step)
        record = {"step": self.pos.step, "stage": stage, "val_accuracy": accuracies.get(self.pos.step, 0.1)}
        self.write_metrics(record)
        return record

    monkeypatch.setattr(Trainer, "validate", validate)
    return seen


def checkpoint_tags(out) -> dict[str, int]:
    return {json.loads((p / "meta.json").read_text())["tag"]: int(p.name.split("-")[1])
            for p in sorted((out / "checkpoints").iterdir())}


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model" / "model.safetensors"))


def test_the_validation_split_is_its_own_stream(synth_val):
    from datasets import load_from_disk

    dd = load_from_disk(str(synth_val))
    assert sorted(dd) == ["test", "train", "validation"]
    boards = lambda split: {r["image"].tobytes() for r in dd[split]}  # noqa: E731
    assert not boards("validation") & boards("test") and not boards("validation") & boards("train")
    assert all(i.startswith("synth-validation-") for i in dd["validation"]["id"])


def test_stop_at_ends_the_stage_at_the_first_validation_after_its_first_epoch(synth_val, tmp_path, monkeypatch):
    # 24 steps per epoch: stage 0 is steps 1-24, stage 1 two epochs (25-48, 49-72); validation every 8 steps inside
    seen = scripted(monkeypatch, {8: 0.99, 32: 0.99, 56: 0.95})
    Trainer(config(synth_val, tmp_path / "run", stop_at=0.9)).run()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows if "loss" in r] == [0] * 24 + [1] * 32  # 8 and 32: in a first epoch
    assert seen == [8, 16, 24, 32, 40, 56]  # no validation at an epoch's last step (48); 56 stopped the stage
    assert checkpoint_tags(tmp_path / "run") == {"stage-0-end": 24, "stage-1-end": 56}


def test_stop_after_leaves_a_stage_its_first_epochs(synth_val, tmp_path, monkeypatch):
    # stage 1 has three epochs (25-48, 49-72, 73-96): with stop_after 2 only a validation in its third epoch ends it
    seen = scripted(monkeypatch, {32: 0.99, 56: 0.99, 80: 0.99})
    cfg = config(synth_val, tmp_path / "run", stop_at=0.9, stop_after=2, stage_epochs=[3])
    Trainer(cfg).run()
    assert seen[-1] == 80 and 56 in seen
    assert checkpoint_tags(tmp_path / "run")["stage-1-end"] == 80
    with pytest.raises(ValueError, match="stop_after"):
        config(synth_val, tmp_path / "bad", stop_after=0)


def test_stop_patience_needs_validations_in_a_row_and_survives_a_resume(synth_val, tmp_path, monkeypatch):
    # stage 1: steps 25-96 (three epochs). 56 alone would stop it with patience 1; 64 breaks the row; 80 and 88 end it
    accuracies = {56: 0.95, 64: 0.5, 80: 0.95, 88: 0.95}
    seen = scripted(monkeypatch, accuracies)
    Trainer(config(synth_val, tmp_path / "run", stop_at=0.9, stop_patience=2, stage_epochs=[3])).run()
    assert seen[-1] == 88 and checkpoint_tags(tmp_path / "run")["stage-1-end"] == 88
    # interrupted between 80 and 88 (the row of one is in the checkpoint), then resumed: the same end
    scripted(monkeypatch, accuracies)
    cfg = config(synth_val, tmp_path / "cut", stop_at=0.9, stop_patience=2, stage_epochs=[3])
    cfg.run = type(cfg.run)(**{**vars(cfg.run), "max_steps": 84})
    Trainer(cfg).run()
    assert checkpoint_tags(tmp_path / "cut").get("max-steps-84") == 84
    seen = scripted(monkeypatch, accuracies)
    cfg.run = type(cfg.run)(**{**vars(cfg.run), "max_steps": None, "resume": True})
    Trainer(cfg).run()
    assert seen == [88] and checkpoint_tags(tmp_path / "cut")["stage-1-end"] == 88
    with pytest.raises(ValueError, match="stop_patience"):
        config(synth_val, tmp_path / "bad", stop_patience=0)


def test_without_stop_at_every_epoch_runs(synth_val, tmp_path, monkeypatch):
    scripted(monkeypatch, {8: 0.99, 24: 0.95})
    Trainer(config(synth_val, tmp_path / "run")).run()
    tags = checkpoint_tags(tmp_path / "run")
    assert tags["stage-0-end"] == 24 and tags["stage-1-end"] == 72


def loss_rows(out) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_overtime_extends_a_stage_whose_stop_rule_has_not_held(synth_val, tmp_path, monkeypatch):
    # stage 1's two planned epochs are steps 25-72 and never reach stop_at; overtime epoch 1 is steps 73-96, and
    # validations at 80 and 88 end it there (stop_patience 2)
    seen = scripted(monkeypatch, {80: 0.95, 88: 0.95})
    out = tmp_path / "run"
    Trainer(config(synth_val, out, stop_at=0.9, stop_patience=2, overtime_epochs=2)).run()
    rows = loss_rows(out)
    assert [r["stage"] for r in rows] == [0] * 24 + [1] * 64
    assert [r["step"] for r in rows if "overtime" in r] == list(range(73, 89))
    assert {r["overtime"] for r in rows if "overtime" in r} == {1} and {r["epoch"] for r in rows[72:]} == {2}
    assert seen[-3:] == [72, 80, 88]  # the planned end validates (as a stage's end does) and finds the rule unmet
    assert checkpoint_tags(out)["stage-1-end"] == 88


def test_overtime_is_bounded_over_the_whole_run_and_orders_its_data_apart(synth_val, tmp_path, monkeypatch):
    # stages 1 and 2 (24 steps each) never reach stop_at; the run's one overtime epoch goes to stage 1
    scripted(monkeypatch, {})
    out = tmp_path / "run"
    trainer = Trainer(config(synth_val, out, stop_at=0.9, overtime_epochs=1, max_latent_stage=2, stage_epochs=[1, 1]))
    trainer.run()
    rows = loss_rows(out)
    assert [r["stage"] for r in rows] == [0] * 24 + [1] * 48 + [2] * 24
    assert [r["step"] for r in rows if "overtime" in r] == list(range(49, 73))
    assert checkpoint_tags(out) == {"stage-0-end": 24, "step-56": 56, "stage-1-end": 72, "stage-2-end": 96}
    ids = lambda batches: [ex.id for batch in batches for ex in batch]  # noqa: E731
    planned, extra = ids(trainer.epoch_batches(1)), ids(trainer.epoch_batches(1, overtime=1))
    assert sorted(planned) == sorted(extra) and planned != extra
    assert extra not in [ids(trainer.epoch_batches(e)) for e in range(3)]


@pytest.mark.parametrize("accuracies", [{56: 0.95, 64: 0.95}, {64: 0.95, 72: 0.95}],
                         ids=["stops-within", "stops-at-its-end"])
def test_overtime_leaves_a_run_whose_stages_stop_in_time_bit_identical(synth_val, tmp_path, monkeypatch, accuracies):
    # stage 1 (steps 25-72) stops at 64, or its rule completes with the validation at its end (72)
    ends = {}
    for overtime in (0, 2):
        scripted(monkeypatch, accuracies)
        out = tmp_path / f"overtime-{overtime}"
        Trainer(config(synth_val, out, stop_at=0.9, stop_patience=2, overtime_epochs=overtime)).run()
        ends[overtime] = weights(out / "checkpoints" / f"step-{checkpoint_tags(out)['stage-1-end']:06d}")
        assert not any("overtime" in r for r in loss_rows(out))
    assert ends[0].keys() == ends[2].keys() and all(torch.equal(ends[0][k], ends[2][k]) for k in ends[0])


def test_a_one_epoch_stage_whose_rule_holds_at_its_end_takes_no_overtime(synth_val, tmp_path, monkeypatch):
    # stage 1 is one epoch (steps 25-48); the validation at its end completes the row (40, 48): its one epoch is done
    seen = scripted(monkeypatch, {40: 0.95, 48: 0.95})
    out = tmp_path / "run"
    Trainer(config(synth_val, out, stop_at=0.9, stop_patience=2, overtime_epochs=2, stage_epochs=[1])).run()
    assert seen[-1] == 48 and checkpoint_tags(out)["stage-1-end"] == 48
    assert not any("overtime" in r for r in loss_rows(out))


@pytest.mark.parametrize("within", [0.05, 0.6])
def test_overtime_only_for_a_stage_near_its_best(synth_val, tmp_path, monkeypatch, within):
    # stage 1 (steps 25-72) validates 80% at 40, then falls to 30%: 50 points below its best at its end (72)
    scripted(monkeypatch, {40: 0.8, 48: 0.3, 56: 0.3, 64: 0.3, 72: 0.3})
    out = tmp_path / "run"
    Trainer(config(synth_val, out, stop_at=0.9, overtime_epochs=1, overtime_within=within, keep_best=True)).run()
    extended = any("overtime" in r for r in loss_rows(out))
    assert extended is (within == 0.6)  # a fall of 50 points: overtime only when 60 points are allowed
    assert checkpoint_tags(out)["stage-1-end"] == (96 if extended else 72)


def test_overtime_resumes_where_it_was_cut(synth_val, tmp_path, monkeypatch):
    accuracies = {80: 0.95, 88: 0.95}
    scripted(monkeypatch, accuracies)
    whole = tmp_path / "whole"
    Trainer(config(synth_val, whole, stop_at=0.9, stop_patience=2, overtime_epochs=2)).run()
    scripted(monkeypatch, accuracies)
    cfg = config(synth_val, tmp_path / "cut", stop_at=0.9, stop_patience=2, overtime_epochs=2)
    cfg.run = type(cfg.run)(**{**vars(cfg.run), "max_steps": 84})  # inside the overtime epoch, between 80 and 88
    Trainer(cfg).run()
    seen = scripted(monkeypatch, accuracies)
    cfg.run = type(cfg.run)(**{**vars(cfg.run), "max_steps": None, "resume": True})
    Trainer(cfg).run()
    assert seen == [88] and checkpoint_tags(tmp_path / "cut")["stage-1-end"] == 88
    a, b = (weights(p / "checkpoints" / "step-000088") for p in (whole, tmp_path / "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in loss_rows(tmp_path / "cut")] == [r["step"] for r in loss_rows(whole)]


def test_overtime_needs_a_stop_rule_and_a_constant_schedule(synth_val, tmp_path):
    with pytest.raises(ValueError, match="overtime_epochs .* needs curriculum.stop_at"):
        config(synth_val, tmp_path / "bad", overtime_epochs=1)
    with pytest.raises(ValueError, match="overtime_within must be in"):
        config(synth_val, tmp_path / "bad", stop_at=0.9, overtime_epochs=1, overtime_within=1.5)
    with pytest.raises(ValueError, match="overtime_epochs must be >= 0"):
        config(synth_val, tmp_path / "bad", stop_at=0.9, overtime_epochs=-1)
    cfg = config(synth_val, tmp_path / "bad", stop_at=0.9, overtime_epochs=1).to_dict()
    cfg["optim"]["schedule"] = "cosine"
    with pytest.raises(ValueError, match="needs optim.schedule constant"):
        TrainConfig.from_dict(cfg)


def test_a_latent_learning_rate_needs_a_new_optimizer_per_stage(synth_val, tmp_path):
    cfg = config(synth_val, tmp_path / "bad").to_dict()
    cfg["optim"]["latent_lr"] = 1e-4
    TrainConfig.from_dict(cfg)
    cfg["curriculum"]["reset_optimizer"] = False
    with pytest.raises(ValueError, match="latent_lr .* needs curriculum.reset_optimizer"):
        TrainConfig.from_dict(cfg)
    cfg["optim"]["latent_lr"] = -1.0
    with pytest.raises(ValueError, match="latent_lr must be >= 0"):
        TrainConfig.from_dict(cfg)


@pytest.mark.parametrize("keep_best", [True, False])
def test_keep_best_ends_the_stage_with_its_best_validated_weights(synth_val, tmp_path, monkeypatch, keep_best):
    seen = scripted(monkeypatch, {56: 0.8})  # the best validation of stage 1 (steps 25-72)
    out = tmp_path / "run"
    Trainer(config(synth_val, out, keep_best=keep_best)).run()
    assert 56 in seen and seen[-1] == 72
    ckpts = {int(p.name.split("-")[1]): p for p in (out / "checkpoints").iterdir()}
    at_56, end = weights(ckpts[56]), weights(ckpts[72])
    same = all(torch.equal(at_56[k], end[k]) for k in at_56)
    assert same is keep_best  # with keep_best the stage's end holds step 56's weights; without, its last ones
    if keep_best:
        best = sorted((out / "best" / "stage-1" / "checkpoints").iterdir())
        assert [json.loads((p / "meta.json").read_text())["step"] for p in best] == [56]  # only the best is kept
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert {"step": 72, "stage": 1, "selected_step": 56, "val_accuracy": 0.8} in rows


def test_selection_needs_validation(synth_val, tmp_path):
    cfg = config(synth_val, tmp_path / "run", keep_best=True).to_dict()
    cfg["run"]["val_every"] = 0
    with pytest.raises(ValueError, match="need run.val_every > 0"):
        TrainConfig.from_dict(cfg)
    ok = config(synth_val, tmp_path / "run", keep_best=True)
    ok.run = type(ok.run)(**{**vars(ok.run), "val_every": 0})  # as `ivtlr train --run.val_every 0` replaces it
    with pytest.raises(ValueError, match="need run.val_every > 0"):
        Trainer(ok)
    cfg["run"]["val_every"], cfg["curriculum"]["stop_at"] = 8, 1.5
    with pytest.raises(ValueError, match="stop_at must be in"):
        TrainConfig.from_dict(cfg)


def test_validation_answers_with_the_latent_steps_of_the_stage_layout(tmp_path, monkeypatch):
    """A stage-s model is validated with as many latent steps as its training layout has: s, or the rationale's
    step count once s passes it (synth rationales have three steps, also for 3-hop questions)."""
    import ivtlr.train as train_module

    data = tmp_path / "data"
    generate(data, n_train=8, n_test=2, seed=1, n_val=2, hops=3)
    seen, real = [], train_module.predict

    def spy(engine, encoder, examples, n_latents, *args, **kwargs):
        seen.append(n_latents)
        return real(engine, encoder, examples, n_latents, *args, **kwargs)

    monkeypatch.setattr(train_module, "predict", spy)
    cfg = config(data, tmp_path / "run", max_latent_stage=4, stage_epochs=[1, 1, 1, 1])
    cfg.data.val_size, cfg.run.val_every, cfg.run.val_max_new_tokens = 2, 0, 4
    Trainer(cfg).run()
    assert seen == [0, 1, 2, 3, 3]  # one validation at each stage's end; stage 4 trains with 3 latents too


def stage0_run(synth_val, out, monkeypatch, accuracies, **curriculum) -> tuple[list[int], dict[str, int]]:
    seen = scripted(monkeypatch, accuracies)
    Trainer(config(synth_val, out, stop_at=0.9, keep_best=True, **{"max_latent_stage": 0, "stage_epochs": None,
                                                                    **curriculum})).run()
    return seen, checkpoint_tags(out)


@pytest.mark.parametrize("accuracies, stage0_end", [({}, 72), ({32: 0.6}, 48), ({16: 0.6}, 24), ({16: 0.95}, 24)],
                         ids=["never-reads", "reads-in-extra-epoch-1", "reads-in-time", "stop-rule-in-time"])
def test_stage0_trains_extra_epochs_only_while_below_its_floor(synth_val, tmp_path, monkeypatch, accuracies,
                                                               stage0_end):
    # stage 0 is planned for one epoch (steps 1-24) and may take two more (25-48, 49-72) while its best validation
    # is below 50%; the decision validates at the end of each of its epochs
    seen, tags = stage0_run(synth_val, tmp_path / "run", monkeypatch, accuracies, cot_extra_epochs=2,
                            cot_extra_below=0.5)
    assert tags["stage-0-end"] == stage0_end and len(loss_rows(tmp_path / "run")) == stage0_end
    assert {24, 48} & set(seen) == {24, 48} & set(range(1, stage0_end + 1))


def test_stage0_extra_epochs_are_a_longer_stage0_and_leave_a_stage0_in_time_bit_identical(synth_val, tmp_path,
                                                                                          monkeypatch):
    # below the floor throughout: the same weights as a stage 0 planned for 3 epochs (the same data orders)
    _, extra = stage0_run(synth_val, tmp_path / "extra", monkeypatch, {}, cot_extra_epochs=2, cot_extra_below=0.5)
    _, longer = stage0_run(synth_val, tmp_path / "longer", monkeypatch, {}, cot_epochs=3)
    a, b = (weights(out / "checkpoints" / f"step-{tags['stage-0-end']:06d}")
            for out, tags in ((tmp_path / "extra", extra), (tmp_path / "longer", longer)))
    assert extra["stage-0-end"] == longer["stage-0-end"] == 72 and all(torch.equal(a[k], b[k]) for k in a)
    # at its floor by the end of its planned epoch: the run of a stage 0 without extra epochs, bit for bit
    _, with_extra = stage0_run(synth_val, tmp_path / "in-time", monkeypatch, {16: 0.6}, cot_extra_epochs=2,
                               cot_extra_below=0.5)
    _, without = stage0_run(synth_val, tmp_path / "plain", monkeypatch, {16: 0.6})
    assert with_extra == without == {"stage-0-end": 24}
    a, b = (weights(out / "checkpoints" / "step-000024") for out in (tmp_path / "in-time", tmp_path / "plain"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stage0_extra_epochs_need_validation_a_run_of_stage0_alone_and_a_constant_schedule(synth_val, tmp_path):
    alone = {"max_latent_stage": 0, "stage_epochs": None}
    with pytest.raises(ValueError, match="needs curriculum.stop_at"):
        config(synth_val, tmp_path / "a", cot_extra_epochs=2, **alone)
    with pytest.raises(ValueError, match="cot_extra_below"):
        config(synth_val, tmp_path / "b", stop_at=0.9, cot_extra_epochs=2, cot_extra_below=1.5, **alone)
    with pytest.raises(ValueError, match="stage 0 alone"):
        config(synth_val, tmp_path / "c", stop_at=0.9, cot_extra_epochs=2)  # goes on to stage 1
    cfg = config(synth_val, tmp_path / "c", stop_at=0.9, cot_extra_epochs=2, **alone)
    cfg.optim = type(cfg.optim)(**{**vars(cfg.optim), "schedule": "cosine"})
    with pytest.raises(ValueError, match="schedule"):
        cfg.check_sections()
