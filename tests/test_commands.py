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
from ivtlr.data.synth import text_corpus


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
    # results are never appended to an old folder: one line, exit status 2
    capsys.readouterr()
    assert ivtlr(["eval", "--checkpoint", str(qwen_checkpoint), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ivtlr eval: error: ") and "not empty" in err and err.count("\n") == 1


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


def test_authors_checkpoint_needs_its_base(tmp_path, capsys):
    pth, *_ = _tiny_chameleon(tmp_path)
    assert ivtlr(["eval", "--checkpoint", str(pth), "--out", str(tmp_path / "e")]) == 2
    assert "pass the base model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="pass the base model"):  # --debug: the exception itself
        ivtlr(["eval", "--checkpoint", str(pth), "--out", str(tmp_path / "e"), "--debug"])


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


def test_infer_names_an_unreadable_image(qwen_checkpoint, tmp_path, capsys):
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"no pixels here")
    assert ivtlr(["infer", "--checkpoint", str(qwen_checkpoint), "--image", str(bad), "--question", "q?",
                  "--choices", "a", "b"]) == 2
    assert "not-an-image.png" in capsys.readouterr().err


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
    assert set(report["results"]) == {"ivtlr", "ivtlr-compiled", "hf-generate", "recompute", "prefill"}
    from ivtlr.commands.bench import format_report

    assert "no decode, however fast, exceeds" in format_report(report)


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


# ------------------------------------------------------------------------------------------------ explain
def test_explain_a_predictions_file_writes_an_offline_gallery(qwen_checkpoint, synth_dir, tmp_path, capsys):
    _eval(capsys, "--checkpoint", qwen_checkpoint, "--data", synth_dir, "--out", tmp_path / "e")
    assert ivtlr(["explain", "--checkpoint", str(qwen_checkpoint), "--predictions", str(tmp_path / "e" / "predictions.jsonl"),
                  "--data", str(synth_dir), "--limit", "4", "--out", str(tmp_path / "g")]) == 0
    pngs = sorted((tmp_path / "g").glob("*.png"))
    page = (tmp_path / "g" / "index.html").read_text()
    assert len(pngs) == 4 and page.count("data:image/png;base64,") == 4
    assert "src=\"http" not in page and "<script" not in page  # self-contained: opens offline
    # one command: the dataset's questions answered now; the same patches as the predictions file's
    cells = lambda out: [line.split("cells per step: ")[1] for line in out.splitlines() if "cells per step" in line]  # noqa: E731
    from_file = cells(capsys.readouterr().out)
    assert ivtlr(["explain", "--checkpoint", str(qwen_checkpoint), "--data", str(synth_dir), "--limit", "4",
                  "--batch-size", "3", "--out", str(tmp_path / "g2")]) == 0
    assert cells(capsys.readouterr().out) == from_file and len(from_file) == 4
    assert len(list((tmp_path / "g2").glob("*.png"))) == 4


def test_explain_one_question_and_bad_records(qwen_checkpoint, synth_dir, tmp_path, capsys):
    from ivtlr.tasks import get_task

    ex = next(iter(get_task("synth").load(str(synth_dir), "test")))
    ex.image.save(tmp_path / "board.png")
    assert ivtlr(["explain", "--checkpoint", str(qwen_checkpoint), "--image", str(tmp_path / "board.png"),
                  "--question", ex.question, "--choices", *ex.choices, "--out", str(tmp_path / "one")]) == 0
    assert len(list((tmp_path / "one").glob("*.png"))) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "nope", "messages": ["q", "a"], "selected_patches": []}) + "\n")
    capsys.readouterr()
    assert ivtlr(["explain", "--checkpoint", str(qwen_checkpoint), "--predictions", str(bad), "--data", str(synth_dir),
                  "--out", str(tmp_path / "x")]) == 2
    assert "'nope' is not in the test split" in capsys.readouterr().err


def _tiles(boxes, w, h):
    area = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes)
    return abs(area - w * h) < 1e-6 * w * h and min(b[0] for b in boxes) == 0 and max(b[2] for b in boxes) == w


def test_qwen_tokens_map_back_to_pixel_boxes_under_any_resize():
    from PIL import Image

    from ivtlr.backbones.qwen2vl import Qwen2VLPromptEncoder
    from ivtlr.tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer(text_corpus(50), 300)
    enc = Qwen2VLPromptEncoder(tok)
    assert enc.token_boxes((84, 84), (3, 3))[5] == (56.0, 28.0, 84.0, 56.0)  # row 1, column 2: one 28 px token
    image = Image.new("RGB", (100, 60))
    grid = tuple(int(v) // 2 for v in enc.encode_prompt("q", image)[1]["image_grid_thw"][0, 1:])
    assert _tiles(enc.token_boxes(image.size, grid), 100, 60)  # the processor's resize: the tokens tile the image
    square = Qwen2VLPromptEncoder(tok, image_size=56)  # model.image_size: resized to 56 x 56 first
    boxes = square.token_boxes((100, 60), (2, 2))
    assert boxes[3] == (50.0, 30.0, 100.0, 60.0) and _tiles(boxes, 100, 60)


def test_chameleon_tokens_map_back_to_the_centre_crop():
    from PIL import Image

    fam = family("chameleon")
    cfg = TrainConfig().model
    cfg.backbone, cfg.tiny_hidden, cfg.tiny_layers, cfg.tiny_heads = "chameleon", 32, 2, 2
    enc = fam.prompt_encoder(fam.build_tiny_tokenizer(cfg, text_corpus(50)))
    assert enc.n_image_tokens == 144  # 48 px, 4 px per VQ code
    boxes = enc.token_boxes((64, 48), (12, 12))  # shortest edge 48: the centre 48 x 48 square, x from 8 to 56
    assert boxes[0] == (8.0, 0.0, 12.0, 4.0) and boxes[-1] == (52.0, 44.0, 56.0, 48.0)
    assert len(enc.encode_prompt("q", Image.new("RGB", (64, 48)))[0]) >= 144
