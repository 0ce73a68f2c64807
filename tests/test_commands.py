"""The commands as a user runs them (``ivtlr VERB ...`` in-process): eval (also on an authors' Chameleon checkpoint),
infer, smoke, bench, and the flags derived from the config dataclasses."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Literal

import pytest
import torch

from ivtlr.backbones import family
from ivtlr.commands import main as ivtlr
from ivtlr.config import TrainConfig
from ivtlr.data.synth import generate, text_corpus
from ivtlr.train import Trainer


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, n_train=16, n_test=6, seed=3)
    return out


@pytest.fixture(scope="module")
def qwen_checkpoint(synth_dir, tmp_path_factory):
    """A tiny Qwen2-VL run checkpoint after two optimizer steps of the last latent stage."""
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig.from_dict({
        "model": {"tiny_hidden": 32, "tiny_layers": 2, "tiny_heads": 2, "tiny_vision_depth": 1, "tiny_vocab": 320},
        "data": {"task": "synth", "source": str(synth_dir), "val_size": 0},
        "curriculum": {"epochs_per_stage": 1, "max_latent_stage": 2, "first_stage": 2},
        "optim": {"lr": 1e-2, "batch_size": 4},
        "latent": {"k": 2},
        "run": {"out_dir": str(out), "progress": False, "max_steps": 2},
    })
    Trainer(cfg).run()
    return sorted((out / "checkpoints").iterdir())[-1]


def _eval(capsys, *args) -> tuple[dict, list[dict], str]:
    assert ivtlr(["eval", *map(str, args)]) == 0
    printed = capsys.readouterr().out
    out = args[args.index("--out") + 1]
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return summary, rows, printed


def test_eval_a_run_checkpoint(qwen_checkpoint, synth_dir, tmp_path, capsys):
    summary, rows, printed = _eval(capsys, "--checkpoint", qwen_checkpoint, "--data", synth_dir, "--out",
                                   tmp_path / "e", "--batch-size", "4")
    assert len(rows) == 6 and summary["ar_steps"] > 0
    assert all(len(r["selected_patches"]) == 2 and all(len(s) == 2 for s in r["selected_patches"]) for r in rows)
    assert "qwen2-vl" in printed and "float32" in printed  # the backbone, device and dtype with the reason
    with pytest.raises(SystemExit, match="not empty"):  # results are never appended to an old folder
        ivtlr(["eval", "--checkpoint", str(qwen_checkpoint), "--out", str(tmp_path / "e")])


def test_eval_latent_overrides_reach_the_engine(qwen_checkpoint, synth_dir, tmp_path, capsys):
    _, rows, _ = _eval(capsys, "--checkpoint", qwen_checkpoint, "--data", synth_dir, "--out", tmp_path / "e",
                       "--latent.k", "1", "--latents", "1")
    assert all(len(r["selected_patches"]) == 1 and len(r["selected_patches"][0]) == 1 for r in rows)


def _tiny_chameleon(tmp_path):
    """An authors'-layout Chameleon checkpoint (their IVTLR wrapper's state_dict) and its base folder."""
    cfg = TrainConfig().model
    cfg.backbone, cfg.tiny_hidden, cfg.tiny_layers, cfg.tiny_heads, cfg.tiny_vocab = "chameleon", 32, 2, 2, 320
    fam = family("chameleon")
    tok = fam.build_tiny_tokenizer(cfg, text_corpus(100))
    model = fam.build_tiny(cfg, tok, seed=0)
    base = tmp_path / "base"
    model.config.save_pretrained(base)
    tok.save_pretrained(base)
    sd = {f"base_causallm.{k}": v for k, v in model.state_dict().items()}
    sd["embedding.weight"] = model.get_input_embeddings().weight  # the wrapper's alias of the embedding table
    pth = tmp_path / "ivtlr-chameleon.pth"
    torch.save(sd, pth)
    return pth, base, model, tok


def test_eval_an_authors_chameleon_checkpoint(synth_dir, tmp_path, capsys):
    """The backbone comes from the base's config.model_type: Chameleon's ids and prompts, not Qwen2-VL's."""
    from ivtlr.batching import collate
    from ivtlr.curriculum import encode_example, inference_sample
    from ivtlr.engine import LatentConfig, LatentEngine
    from ivtlr.tasks import get_task

    pth, base, model, tok = _tiny_chameleon(tmp_path)
    summary, rows, printed = _eval(capsys, "--checkpoint", pth, "--base", base, "--task", "synth", "--data", synth_dir,
                                   "--out", tmp_path / "e", "--latents", "2", "--latent.k", "2", "--dtype", "float32",
                                   "--max-new-tokens", "4")
    assert "chameleon" in printed and len(rows) == 6
    # the same answers as the Chameleon engine built by hand on the same weights
    fam = family("chameleon")
    tokens, encoder, task = fam.token_ids(tok), fam.prompt_encoder(tok), get_task("synth")
    engine = LatentEngine(fam(model, tokens), LatentConfig(k=2))
    examples = list(task.load(str(synth_dir), "test"))
    batch = collate([inference_sample(encode_example(task, encoder, ex, tokens.image), 2, tokens.latent)
                     for ex in examples], tokens.pad)
    with torch.no_grad():
        gen = engine.generate(batch, 4)
    assert [r["selected_patches"] for r in rows] == [[list(s) for s in sel] for sel in gen.selected]


def test_authors_checkpoint_needs_its_base(tmp_path):
    pth, *_ = _tiny_chameleon(tmp_path)
    with pytest.raises(ValueError, match="pass the base model"):
        ivtlr(["eval", "--checkpoint", str(pth), "--out", str(tmp_path / "e")])


def test_infer_one_question(qwen_checkpoint, synth_dir, tmp_path, capsys):
    from ivtlr.tasks import get_task

    ex = next(iter(get_task("synth").load(str(synth_dir), "test")))
    image = tmp_path / "board.png"
    ex.image.save(image)
    code = ivtlr(["infer", "--checkpoint", str(qwen_checkpoint), "--image", str(image), "--question", ex.question,
                  "--choices", *ex.choices, "--json", "--max-new-tokens", "6"])
    assert code == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["grid"] == [3, 3] and len(result["selected_cells"]) == 2
    assert all(0 <= r < 3 and 0 <= c < 3 for step in result["selected_cells"] for r, c in step)
    assert 1 <= result["ar_steps"] <= 6


def test_infer_names_an_unreadable_image(qwen_checkpoint, tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"no pixels here")
    with pytest.raises(SystemExit, match="not-an-image.png"):
        ivtlr(["infer", "--checkpoint", str(qwen_checkpoint), "--image", str(bad), "--question", "q?",
               "--choices", "a", "b"])


def test_smoke(capsys):
    assert ivtlr(["smoke", "--steps", "30"]) == 0
    assert "answers match the trained target" in capsys.readouterr().out


def test_bench_tiny_one_repeat(capsys):
    code = ivtlr(["bench", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--num-kv-heads", "1",
                  "--image-size", "56", "--k", "1", "--latents", "2", "--new-tokens", "2", "--batch", "2",
                  "--repeats", "1", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["device"] == "cpu" and report["config"]["dtype"] == "float32"
    assert "float32" in report["machine"]["placement"]
    assert report["results"]


# ------------------------------------------------------------------------------------------- flag derivation
@dataclass
class _Flags:
    n: int = 1
    """How many."""
    mode: Literal["a", "b"] = "a"
    on: bool = False
    sizes: list[int] | None = None
    name: str | None = None


def test_flags_come_from_the_dataclass():
    from ivtlr.cliargs import add_dataclass_flags, dataclass_from_args

    p = argparse.ArgumentParser()
    add_dataclass_flags(p, _Flags, prefix="x")
    assert "How many." in p.format_help()
    args = p.parse_args(["--x.n", "3", "--x.mode", "b", "--x.on", "--x.sizes", "1", "2"])
    assert dataclass_from_args(args, _Flags, "x") == _Flags(n=3, mode="b", on=True, sizes=[1, 2])
    base = _Flags(n=7, on=True)
    assert dataclass_from_args(p.parse_args(["--no-x.on"]), _Flags, "x", base) == _Flags(n=7, on=False)
    assert dataclass_from_args(p.parse_args([]), _Flags, "x", base) == base  # unset flags keep the base's values
    with pytest.raises(SystemExit):
        p.parse_args(["--x.mode", "c"])  # Literal -> choices
    with pytest.raises(SystemExit):
        p.parse_args(["--x.n", "three"])
