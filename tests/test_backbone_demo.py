"""Tiny from-scratch runs over every backbone: the tiny tokenizer and model per backbone, Chameleon's prompt
layout and pixel values, a short training through the Trainer (latent passes included) for Qwen2.5-VL and
Chameleon, and the quick demo end to end on Chameleon."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ivtlr.config import ModelConfig, TrainConfig
from ivtlr.data.synth import generate, text_corpus
from ivtlr.backbones import family


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, n_train=16, n_test=4)
    return out


@pytest.fixture(scope="module")
def synth_example(synth_dir):
    from ivtlr.tasks import get_task

    task = get_task("synth")
    return task, next(iter(task.load(str(synth_dir), "train")))


def tiny_cfg(backbone: str, **kw) -> ModelConfig:
    return ModelConfig(backbone=backbone, tiny_hidden=32, tiny_layers=2, tiny_heads=2, tiny_vision_depth=1,
                       tiny_vocab=320, **kw)


@pytest.fixture(scope="module")
def chameleon_tokenizer():
    return family("chameleon").build_tiny_tokenizer(tiny_cfg("chameleon"), text_corpus(100))


@pytest.mark.parametrize("backbone,model_type", [("qwen2-vl", "qwen2_vl"), ("qwen2.5-vl", "qwen2_5_vl"),
                                                 ("chameleon", "chameleon")])
def test_build_tiny_dispatches_every_backbone(backbone, model_type):
    from ivtlr.backbones import BACKBONES, backbone_for

    cfg = tiny_cfg(backbone)
    tok = family(backbone).build_tiny_tokenizer(cfg, text_corpus(100))
    model = family(backbone).build_tiny(cfg, tok, seed=0)
    assert model.config.model_type == model_type and not model.training
    assert model.get_input_embeddings().weight.shape == (len(tok), 32)
    assert isinstance(backbone_for(model, family(backbone).token_ids(tok)), BACKBONES[backbone])
    again = family(backbone).build_tiny(cfg, tok, seed=0)  # deterministic from the seed
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_unknown_backbone_is_named():
    from ivtlr.backbones import family_of_model_type

    with pytest.raises(ValueError, match="unknown backbone 'llava'"):
        family("llava")
    with pytest.raises(ValueError, match="no IVT-LR backbone for model type 'llava'"):
        family_of_model_type("llava")


def test_chameleon_tokenizer_layout(chameleon_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    from ivtlr.backbones.chameleon import CHAMELEON_SPECIAL_TOKENS, TINY_CHAMELEON_CODES, chameleon_code_name
    from ivtlr.tokenizer import LATENT_TOKENS

    tok = chameleon_tokenizer
    conv = tok.convert_tokens_to_ids
    assert conv(list(CHAMELEON_SPECIAL_TOKENS)) == list(range(7))
    assert (tok.bos_token, tok.pad_token, tok.eos_token, tok.sep_token) == ("<s>", "<pad>", "</s>", "<reserved08706>")
    codes = conv([chameleon_code_name(c) for c in range(TINY_CHAMELEON_CODES)])
    assert codes == list(range(codes[0], codes[0] + TINY_CHAMELEON_CODES))  # contiguous, after the text tokens
    assert conv(list(LATENT_TOKENS)) == [codes[-1] + 1, codes[-1] + 2, codes[-1] + 3] == [len(tok) - 3, len(tok) - 2,
                                                                                          len(tok) - 1]
    ids = tok("<s><racm3:break><image>IMGIMGBCZ<eoss>red<|latent|></s>", add_special_tokens=False)["input_ids"]
    assert ids == [0, 4, 6, codes[12], 5, *tok("red", add_special_tokens=False)["input_ids"], len(tok) - 1, 2]
    assert tok.decode(ids, skip_special_tokens=True) == "red"
    tok.save_pretrained(tmp_path / "tok")  # the recorded image geometry survives a checkpoint
    back = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert back.get_vocab() == tok.get_vocab()
    assert (back.init_kwargs["image_size"], back.init_kwargs["image_seq_length"]) == (48, 144)


def test_chameleon_prompt_encoder_layout_and_pixels(chameleon_tokenizer, synth_example):
    from ivtlr.backbones.chameleon import ChameleonPromptEncoder
    from ivtlr.batching import collate_vision

    tok, (task, ex) = chameleon_tokenizer, synth_example
    enc = family("chameleon").prompt_encoder(tok, None)
    assert isinstance(enc, ChameleonPromptEncoder) and (enc.side, enc.n_image_tokens) == (48, 144)
    text = task.prompt(ex, "train")
    ids, vision = enc.encode_prompt(text, ex.image)
    assert ex.image.size == (84, 84)
    # <s> <racm3:break> <image> x 144 <eoss> text
    assert ids == [0, 4] + [6] * 144 + [5] + enc.encode_text(text)
    assert list(vision) == ["pixel_values"]
    pv = vision["pixel_values"]
    assert pv.shape == (1, 3, 48, 48) and pv.dtype == torch.float32
    assert -1.0 <= float(pv.min()) and float(pv.max()) < 1.0  # x * 0.0078 - 1
    # channel-first, the same pixels as a plain Lanczos resize of the RGB image to 48 x 48
    resized = torch.from_numpy(np.array(ex.image.convert("RGB").resize((48, 48), Image.LANCZOS))).float()
    assert torch.allclose(pv[0], resized.permute(2, 0, 1) * 0.0078 - 1, atol=1e-5)
    batch = collate_vision([vision, enc.encode_prompt(text, ex.image)[1]])  # the collator's dim-0 concatenation
    assert batch["pixel_values"].shape == (2, 3, 48, 48)
    assert enc.encode_prompt(text, None) == ([0] + enc.encode_text(text), {})

    small = family("chameleon").prompt_encoder(tok, 32)  # model.image_size overrides the side, same 4 px per token
    ids, vision = small.encode_prompt(text, ex.image)
    assert ids.count(6) == 64 and vision["pixel_values"].shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="not a multiple of the 4 px per image token"):
        family("chameleon").prompt_encoder(tok, 30)


def test_chameleon_prompt_encoder_defaults_to_the_real_geometry(chameleon_tokenizer):
    from ivtlr.backbones.chameleon import ChameleonPromptEncoder

    tok = chameleon_tokenizer
    saved = dict(tok.init_kwargs)
    try:  # a real Chameleon tokenizer records no geometry: ChameleonProcessor's 512 px, 1024 tokens (16 px each)
        for key in ("image_size", "image_seq_length"):
            tok.init_kwargs.pop(key)
        enc = ChameleonPromptEncoder(tok)
        assert (enc.side, enc.n_image_tokens) == (512, 1024)
        assert ChameleonPromptEncoder(tok, 256).n_image_tokens == 256
    finally:
        tok.init_kwargs.clear()
        tok.init_kwargs.update(saved)


def test_chameleon_prompt_matches_the_tiny_models_vq_codes(chameleon_tokenizer, synth_example):
    from ivtlr.backbones import backbone_for

    tok, (task, ex) = chameleon_tokenizer, synth_example
    model = family("chameleon").build_tiny(tiny_cfg("chameleon"), tok, seed=0)
    assert not any(p.requires_grad for p in model.model.vqmodel.parameters())  # frozen: its output is discrete
    backbone = backbone_for(model, family("chameleon").token_ids(tok))
    ids, vision = family("chameleon").prompt_encoder(tok, None).encode_prompt(task.prompt(ex, "train"), ex.image)
    ids = torch.tensor([ids])
    embeds = backbone.embed_inputs(ids, vision)  # raises when placeholders and VQ codes differ in number
    codes = backbone.image_codes(vision["pixel_values"])
    assert codes.shape == (1, 144) and backbone.image_grids(vision) == [(12, 12)]
    assert torch.equal(embeds[ids == 6], backbone.embed_tokens(codes)[0])
    with pytest.raises(ValueError, match="was built for 48 px images, the model for 32 px"):
        family("chameleon").build_tiny(tiny_cfg("chameleon", image_size=32), tok, seed=0)


@pytest.mark.parametrize("backbone", ["qwen2.5-vl", "chameleon"])
def test_two_step_tiny_training_with_latent_steps(backbone, synth_dir, tmp_path):
    from ivtlr.models import load_model
    from ivtlr.train import Trainer

    cfg = TrainConfig.from_dict({
        "model": {"backbone": backbone, "tiny_hidden": 32, "tiny_layers": 2, "tiny_heads": 2, "tiny_vision_depth": 1,
                  "tiny_vocab": 320},
        "data": {"task": "synth", "source": str(synth_dir), "val_size": 0},
        # start at the last stage: every step latent, so the 2 steps run K x 3 latent selections
        "curriculum": {"epochs_per_stage": 1, "max_latent_stage": 3, "first_stage": 3},
        "optim": {"lr": 1e-2, "batch_size": 4},
        "latent": {"k": 3},
        "run": {"out_dir": str(tmp_path / "run"), "progress": False, "max_steps": 2},
    })
    trainer = Trainer(cfg)
    trainer.run()
    assert trainer.pos.step == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if line]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses) and {r["stage"] for r in rows if "loss" in r} == {3}
    before = dict(family(backbone).build_tiny(cfg.model, trainer.s.tokenizer, cfg.optim.seed).named_parameters())  # the initial model
    after = dict(trainer.s.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert any("embed_tokens" in n for n in changed) and any("layers.1." in n for n in changed)
    assert not any("vqmodel" in n for n in changed)
    expected_tokens = 144 if backbone == "chameleon" else 9
    assert all(ex.n_image_tokens == expected_tokens for ex in trainer.s.train)

    # the checkpoint reloads with the same prompt layout (for Chameleon: the image geometry travels in the tokenizer)
    ckpt = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
    read = load_model(ckpt)
    model, tok, loaded = read.model, read.tokenizer, read.config
    assert read.family.name == backbone  # from the model's own config.model_type
    enc = read.family.prompt_encoder(tok, loaded.model.image_size)
    example = trainer.s.train[0]
    task_ex = next(ex for ex in trainer.s.task.load(str(synth_dir), "train") if ex.id == example.id)
    ids, vision = enc.encode_prompt(trainer.s.task.prompt(task_ex, "train"), task_ex.image)
    assert ids == example.prompt_ids
    assert all(torch.equal(vision[k], example.vision[k]) for k in example.vision)
    assert all(torch.equal(p, after[n].detach()) for n, p in model.named_parameters())


def test_quick_demo_runs_on_chameleon(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "ivtlr.commands", "demo", "--quick", "--backbone", "chameleon",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "report.md").stat().st_size > 0
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["backbone"] == "chameleon"
    results = data["results"]
    assert {"ivtlr", "cot", "nocot", "random_patches", "stage_1"} <= set(results)
    assert all(r["n_questions"] == 24 and 0.0 <= r["accuracy"]["official_az"] <= 1.0 for r in results.values())
