"""Nothing lost, nothing silently wrong: every case of docs/reliability.md, as a user meets it through ``ivtlr``.

An expected error is one line, ``ivtlr VERB: error: ...`` naming the file, record or flag, and exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from ivtlr import checkpoint as ckpt
from ivtlr.commands import VERBS
from ivtlr.commands import main as ivtlr
from ivtlr.config import TrainConfig
from ivtlr.train import Trainer

TINY = {"model": {"tiny_hidden": 32, "tiny_layers": 2, "tiny_heads": 2, "tiny_vision_depth": 1, "tiny_vocab": 320},
        "curriculum": {"epochs_per_stage": 1, "max_latent_stage": 1},
        "optim": {"lr": 1e-2, "batch_size": 4}, "latent": {"k": 2}}


def _config(synth_dir, out, **run) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, "data": {"task": "synth", "source": str(synth_dir), "val_size": 0},
                                  "run": {"out_dir": str(out), "progress": False, **run}})


def _error(capsys, argv, *needles, verb=None) -> str:
    """Run ``ivtlr argv``: exit 2 and one stderr line ``ivtlr VERB: error: ...`` holding every needle."""
    capsys.readouterr()
    assert ivtlr([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]  # (log lines, such as the placement, come first)
    assert lines[-1].startswith(f"ivtlr {verb or argv[0]}: error: ") and err.count(": error: ") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _usage_error(capsys, argv, needle):
    """A bad flag value: argparse's usage line and ``ivtlr VERB: error: ...``, exit status 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        ivtlr([str(a) for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"ivtlr {argv[0]}: error: " in err and needle in err and "Traceback" not in err, err


# ------------------------------------------------------------------------------------ 1. never destroy work
def test_a_run_folder_is_never_replaced_silently(synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(_config(synth_dir, out, max_steps=1)).run()
    first = sorted((out / "checkpoints").iterdir())
    config = tmp_path / "c.yaml"
    _config(synth_dir, out, max_steps=1).save(config)
    _error(capsys, ["train", config], "already holds a run", "--run.resume", "--run.overwrite")
    assert sorted((out / "checkpoints").iterdir()) == first  # untouched
    _error(capsys, ["train", config, "--run.resume", "--run.overwrite"], "exclude each other")
    assert ivtlr(["train", str(config), "--run.overwrite", "--run.max_steps", "2"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[0] == 1  # one run's metrics, not two interleaved


def test_keep_last_never_prunes_the_checkpoint_just_written(qwen_checkpoint, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(qwen_checkpoint, run / "checkpoints" / "step-000900")  # a later step left by another run
    loaded = ckpt.read_meta(qwen_checkpoint)
    from ivtlr.models import load_model

    m = load_model(qwen_checkpoint)
    final = ckpt.save_checkpoint(run, 3, m.model, m.tokenizer, m.config, {"position": {}}, "t", keep_last=1)
    assert final.is_dir() and loaded["kind"] == "full"


def test_data_synth_and_demo_refuse_a_folder_that_holds_work(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("finished work")
    _error(capsys, ["data", "synth", "--out", out, "--n-train", "2", "--n-test", "1"], "not empty", "--overwrite",
           verb="data")
    _error(capsys, ["demo", "--quick", "--out", out], "already holds", "--overwrite")
    assert (out / "keep.txt").read_text() == "finished work"
    assert ivtlr(["data", "synth", "--out", str(out), "--n-train", "2", "--n-test", "1", "--overwrite"]) == 0
    assert not (out / "keep.txt").exists()


# ---------------------------------------------------------------------------- 2. no silent wrong results
def test_duplicate_ids_are_an_error(qwen_checkpoint, synth_dir, tmp_path, capsys):
    from datasets import load_from_disk

    dd = load_from_disk(str(synth_dir))
    ids = dd["test"]["id"]
    dd["test"] = dd["test"].map(lambda row, i: {"id": ids[0] if i == 1 else row["id"]}, with_indices=True)
    dd.save_to_disk(str(tmp_path / "dup"))
    _error(capsys, ["eval", "--checkpoint", qwen_checkpoint, "--data", tmp_path / "dup", "--out", tmp_path / "e"],
           "duplicate_id", ids[0], "rows 0 and 1")


@pytest.mark.parametrize("argv, needle", [
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--limit", "-3"], "--limit must be >= 1"),
    (["--latents", "-1"], "--latents must be >= 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--mode", "cot", "--latents", "2"], "--latents is for --mode ivtlr"),
])
def test_eval_arguments_are_validated(qwen_checkpoint, tmp_path, capsys, argv, needle):
    _usage_error(capsys, ["eval", "--checkpoint", qwen_checkpoint, "--out", tmp_path / "e", *argv], needle)


def test_eval_records_provenance_and_names_rows(qwen_checkpoint, synth_dir, tmp_path, capsys):
    assert ivtlr(["eval", "--checkpoint", str(qwen_checkpoint), "--data", str(synth_dir), "--out", str(tmp_path / "e"),
                  "--limit", "2", "--latent.k", "1"]) == 0
    s = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert s["checkpoint"] == str(qwen_checkpoint.resolve()) and s["data"] == str(synth_dir.resolve())
    assert s["mode"] == "ivtlr" and s["skipped"] == {} and s["on_error"] and s["limit"] == 2
    assert s["name"] == "ivtlr [latent.k=1]"


def test_k_times_latent_stages_beyond_the_image_is_refused_unless_there_are_no_latents(synth_dir, tmp_path, capsys):
    """K x max_latent_stage above an image's tokens: one line naming the record, before anything trains; a No-CoT
    run (no latent steps at all) with the same numbers trains."""
    flags = ["--data.source", str(synth_dir), "--data.val_size", "0", "--model.tiny_hidden", "32", "--model.tiny_layers", "1",
             "--model.tiny_heads", "2", "--model.tiny_vocab", "320", "--latent.k", "4", "--curriculum.max_latent_stage",
             "3", "--run.max_steps", "1", "--no-run.progress"]
    _error(capsys, ["train", *flags, "--run.out_dir", tmp_path / "a"], "record 'synth-", "4 x 3 = 12", verb="train")
    assert not (tmp_path / "a" / "checkpoints").exists()
    assert ivtlr(["train", *flags, "--curriculum.no_cot", "--run.out_dir", str(tmp_path / "b")]) == 0
    assert any((tmp_path / "b" / "checkpoints").iterdir())

def test_a_no_cot_checkpoint_is_evaluated_without_latents(synth_dir, tmp_path, capsys):
    cfg = TrainConfig.from_dict({**TINY, "curriculum": {"no_cot": True, "epochs_per_stage": 1},
                                 "data": {"task": "synth", "source": str(synth_dir), "val_size": 0},
                                 "run": {"out_dir": str(tmp_path / "run"), "progress": False, "max_steps": 1}})
    Trainer(cfg).run()
    path = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
    assert ivtlr(["eval", "--checkpoint", str(path), "--out", str(tmp_path / "e"), "--limit", "2"]) == 0
    s = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert s["mode"] == "direct" and s["n_latents"] == 0


def test_a_checkpoint_evaluates_from_any_directory(synth_dir, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    shutil.copytree(synth_dir, work / "data")
    monkeypatch.chdir(work)
    cfg = _config("data", tmp_path / "run", max_steps=1)  # a relative data path
    Trainer(cfg).run()
    path = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
    assert TrainConfig.load(path / "config.yaml").data.source == str((work / "data").resolve())
    monkeypatch.chdir(tmp_path)
    assert ivtlr(["eval", "--checkpoint", str(path), "--out", str(tmp_path / "e"), "--limit", "1"]) == 0


def _predictions(tmp_path, records) -> str:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


GOOD = {"id": "q1", "choices": ["a", "b"], "answer": "A", "domain": "d", "topic": "t",
        "messages": ["prompt", "Therefore, the answer is A"]}


@pytest.mark.parametrize("change, needle", [
    ({"messages": "Therefore, the answer is A"}, "messages must be a non-empty list"),
    ({"messages": []}, "messages must be a non-empty list"),
    ({"messages": ["p", 3]}, "must be a string"),
    ({"choices": []}, "choices must be a non-empty list"),
    ({"choices": "ab"}, "choices must be a non-empty list"),
])
def test_score_refuses_malformed_records(tmp_path, capsys, change, needle):
    _error(capsys, ["score", "--task", "m3cot", _predictions(tmp_path, [{**GOOD, **change}])], needle, "q1")


def test_score_refuses_an_empty_file_and_a_letter_scienceqa_answer(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    _error(capsys, ["score", str(empty)], "no records")
    sqa = {**GOOD, "answer": "B", "categories": ["NAT"], "messages": ["p", "Therefore, the answer is 1"]}
    _error(capsys, ["score", "--task", "scienceqa", _predictions(tmp_path, [sqa])], "0-based index", "write 1")


def test_infer_inputs(qwen_checkpoint, synth_dir, tmp_path, capsys):
    from ivtlr.tasks import get_task

    ex = next(iter(get_task("synth").load(str(synth_dir), "test")))
    image = tmp_path / "board.png"
    ex.image.save(image)
    base = ["infer", "--checkpoint", qwen_checkpoint]
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"image": str(image), "question": "q?", "choices": "abc"}) + "\n")
    _error(capsys, [*base, "--questions", questions], "choices must be a list", "line 1")
    questions.write_text(json.dumps({"image": str(image), "question": "q?", "choices": ["a", "b"]}) + "\n{oops\n")
    _error(capsys, [*base, "--questions", questions], "line 2", "not valid JSON")
    _error(capsys, [*base, "--image", image, "--question", "q?", "--choices", *map(str, range(27))], "2 to 26")
    _error(capsys, [*base, "--image", image, "--question", "word " * 9000, "--choices", "a", "b"],
           "positions, but the model has 4096")


# ------------------------------------------------------------------------------ 3. checkpoints you can trust
def _copy(qwen_checkpoint, tmp_path):
    return shutil.copytree(qwen_checkpoint, tmp_path / "ck")


def test_weights_corrupted_in_place_are_named(qwen_checkpoint, tmp_path, capsys):
    path = _copy(qwen_checkpoint, tmp_path)
    weights = path / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # same size, other bytes
    weights.write_bytes(bytes(data))
    _error(capsys, ["eval", "--checkpoint", path, "--out", tmp_path / "e"], "model.safetensors", "checksum mismatch")
    weights.write_bytes(bytes(data[:1000]))
    _error(capsys, ["eval", "--checkpoint", path, "--out", tmp_path / "e"], "model.safetensors", "truncated")
    (path / ckpt.CHECKSUMS).unlink()  # an old checkpoint without checksums: the loader still names the file
    _error(capsys, ["eval", "--checkpoint", path, "--out", tmp_path / "e"], "model.safetensors", "cannot load")


def test_resume_falls_back_past_a_corrupt_newest_checkpoint(synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(_config(synth_dir, out, max_steps=2, save_every=1, keep_last=3)).run()
    older, newest = ckpt.list_checkpoints(out)[-2:]
    state = newest / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # truncated
    trainer = Trainer(_config(synth_dir, out, max_steps=3, resume=True))
    logs = []
    trainer.log = logs.append
    trainer.run()
    warning = next(line for line in logs if line.startswith("warning:"))
    assert str(newest) in warning and str(older) in warning and "trainer_state.pt" in warning
    assert any(f"resumed from {older}" in line for line in logs)


def test_a_pickle_that_is_not_weights_only_is_refused(qwen_checkpoint, tmp_path):
    path = _copy(qwen_checkpoint, tmp_path)
    torch.save({"position": argparse.Namespace(step=1)}, path / "trainer_state.pt")  # needs arbitrary unpickling
    with pytest.raises(ckpt.CheckpointError, match="not a weights-only file"):
        ckpt.load_trainer_state(path)


def test_a_full_disk_leaves_the_previous_checkpoint_intact(qwen_checkpoint, tmp_path, monkeypatch):
    from ivtlr.models import load_model

    m = load_model(qwen_checkpoint)
    run = tmp_path / "run"
    first = ckpt.save_checkpoint(run, 1, m.model, m.tokenizer, m.config, {"position": {}}, "t", keep_last=1)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(OSError, match="nothing was replaced, the previous checkpoints are intact"):
        ckpt.save_checkpoint(run, 2, m.model, m.tokenizer, m.config, {"position": {}}, "t", keep_last=1)
    assert ckpt.list_checkpoints(run) == [first] and not list((run / "checkpoints").glob(".tmp-*"))
    ckpt.verify_checkpoint(first)


# ---------------------------------------------------------------------------------------- 4. CLI errors
def test_bad_configs_are_one_line_naming_the_file_and_key(synth_dir, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    _error(capsys, ["train", bad], "bad.yaml", "not valid YAML")
    bad.write_text("")
    _error(capsys, ["train", bad], "bad.yaml is empty")
    bad.write_text(yaml.safe_dump({"latent": {"k": "banana"}}))
    _error(capsys, ["train", bad], "latent.k must be an integer", "'banana'")
    bad.write_text(yaml.safe_dump({"optim": {"learning_rate": 1e-3}}))
    _error(capsys, ["train", bad], "unknown key optim.learning_rate", "did you mean optim.lr")
    bad.write_text(yaml.safe_dump({"optimiser": {}}))
    _error(capsys, ["train", bad], "unknown section 'optimiser'", "did you mean optim")


def test_bad_generation_settings_are_refused_before_anything_is_written(tmp_path, capsys):
    """A validation batch of 0 once failed deep inside training (``range() arg 3 must not be zero``)."""
    for flags in (["--eval-batch-size", "0"], ["--eval-batch-size", "-3"], ["--val-every", "-1"]):
        _usage_error(capsys, ["demo", "--quick", "--out", tmp_path / "d", *flags], "run: eval_batch_size >= 1")
    _usage_error(capsys, ["demo", "--quick", "--out", tmp_path / "d", "--batch-size", "0"], "optim: lr > 0")
    _error(capsys, ["train", Path(__file__).parents[1] / "configs" / "demo-cpu.yaml", "--run.out_dir", tmp_path / "t",
                    "--run.eval_batch_size", "0"], "run: eval_batch_size >= 1")
    assert not any(tmp_path.iterdir())


def test_missing_and_truncated_checkpoint_files(qwen_checkpoint, tmp_path, capsys):
    _error(capsys, ["eval", "--checkpoint", tmp_path / "nope", "--out", tmp_path / "e"], "no checkpoint at")
    _error(capsys, ["infer", "--checkpoint", tmp_path / "nope", "--image", "x.png", "--question", "q",
                    "--choices", "a", "b"], "x.png")
    path = _copy(qwen_checkpoint, tmp_path)
    (path / "meta.json").write_text("{")
    _error(capsys, ["eval", "--checkpoint", path, "--out", tmp_path / "e"], "meta.json")


def test_every_flag_of_every_command_has_help_and_help_renders(monkeypatch):
    undocumented = {}

    def inspect_parser(self, args=None, namespace=None):
        for action in self._actions:
            if action.option_strings and action.help in (None, "") and action.dest != "help":
                undocumented.setdefault(self.prog, []).append(action.option_strings[0])
        self.format_help()  # what --help prints: a stray % in a help string makes argparse raise here
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", inspect_parser)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args",
                        lambda self, *a, **k: inspect_parser(self) or (None, []))
    for verb, (module, _) in VERBS.items():
        argv = ["synth"] if verb == "data" else ["list"] if verb == "experiments" else []
        with pytest.raises(SystemExit):
            importlib.import_module(module).main(argv)
    assert undocumented == {}


# ------------------------------------------------------------------------------ evaluation: kill and resume
def test_eval_killed_mid_run_resumes_to_the_same_files(qwen_checkpoint, synth_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    base = [sys.executable, "-m", "ivtlr.commands", "eval", "--checkpoint", str(qwen_checkpoint), "--data",
            str(synth_dir), "--split", "train", "--batch-size", "2", "--max-new-tokens", "12", "--no-progress"]
    whole = tmp_path / "whole"
    subprocess.run([*base, "--out", str(whole)], check=True, capture_output=True, timeout=300)
    part = tmp_path / "part"
    proc = subprocess.Popen([*base, "--out", str(part)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stream = part / "predictions.partial.jsonl"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if stream.is_file() and len(stream.read_text().splitlines()) >= 4:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the evaluation finished before it could be killed"
    answered = len(stream.read_text().splitlines())
    assert 4 <= answered < 16 and not (part / "predictions.jsonl").exists()
    with stream.open("a") as f:
        f.write('{"id": "torn')  # a line cut by the kill
    done = subprocess.run([*base, "--out", str(part), "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{answered} of 16 questions already answered" in done.stdout
    assert (part / "predictions.jsonl").read_bytes() == (whole / "predictions.jsonl").read_bytes()
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, part))
    assert a["accuracy"] == b["accuracy"] and a["ar_steps"] == b["ar_steps"] and b["resumed"] == answered
    assert not stream.exists()


def test_two_process_evaluation_equals_one_process(qwen_checkpoint, synth_dir, tmp_path):
    """Data-parallel evaluation (torchrun / accelerate launch): the ranks shard the questions, rank 0 merges."""
    import os
    import subprocess
    import sys

    args = ["eval", "--checkpoint", str(qwen_checkpoint), "--data", str(synth_dir), "--split", "train",
            "--batch-size", "3", "--max-new-tokens", "12", "--no-progress"]
    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "ivtlr.commands", *args, "--out", str(one)], check=True,
                   capture_output=True, timeout=300)
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "ivtlr.commands", *args, "--out", str(two)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (two / "predictions.jsonl").read_bytes() == (one / "predictions.jsonl").read_bytes()
    a, b = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert a["accuracy"] == b["accuracy"] and b["processes"] == 2 and b["n_questions"] == 16
    assert sorted(p.name for p in two.iterdir()) == ["predictions.jsonl", "summary.json", "table.md"]


def test_weights_of_another_architecture_or_size_are_refused(qwen_checkpoint, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    path = _copy(qwen_checkpoint, tmp_path)
    weights = path / "model" / "model.safetensors"
    (path / ckpt.CHECKSUMS).unlink()  # as if the checkpoint were assembled by hand
    state = load_file(str(weights))
    bigger = {k: torch.zeros(*(d * 2 for d in v.shape)) for k, v in state.items()}  # another size
    save_file(bigger, str(weights))
    _error(capsys, ["eval", "--checkpoint", path, "--out", tmp_path / "e"], "model.safetensors")
    save_file({"model.decoder.layers.0.weight": torch.zeros(3)}, str(weights))  # another architecture
    _error(capsys, ["eval", "--checkpoint", path, "--out", tmp_path / "e"], "model.safetensors", "do not fit")
