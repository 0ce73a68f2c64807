"""Model set-up for real users, offline: a local 'pretrained' model gets the latent tokens, LoRA on the language
model only, trains, checkpoints an adapter and loads back with identical outputs. Config files load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ivtlr.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_config_files_load_and_say_how_to_run(path):
    TrainConfig.load(path)
    head = path.read_text().splitlines()[:12]
    assert head[0].startswith("#") and any("ivtlr" in line and "train" in line for line in head)


def test_pretrained_model_gets_latent_tokens_and_language_model_lora(tmp_path):
    from ivtlr.data.synth import generate, text_corpus
    from ivtlr.evaluate import predict
    from ivtlr.backbones.qwen2vl import QwenSpecialIds, TinyQwen2VLSpec, build_tiny_qwen2vl
    from ivtlr.models import load_model
    from ivtlr.tokenizer import QWEN2VL_SPECIAL_TOKENS, _train_bpe
    from ivtlr.train import Trainer

    # a "pretrained" model folder without the latent tokens, as on the hub
    tok = _train_bpe(text_corpus(200), 320, QWEN2VL_SPECIAL_TOKENS)
    conv = tok.convert_tokens_to_ids
    ids = QwenSpecialIds(image_pad=conv("<|image_pad|>"), video_pad=conv("<|video_pad|>"), vision_start=conv("<|vision_start|>"),
                         vision_end=conv("<|vision_end|>"), latent=0, eos=tok.eos_token_id, pad=tok.pad_token_id)
    spec = TinyQwen2VLSpec(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2,
                           num_kv_heads=1, vision_depth=1, vision_embed_dim=32, vision_heads=2)
    base = tmp_path / "base"
    build_tiny_qwen2vl(spec, ids).save_pretrained(base)
    tok.save_pretrained(base)
    generate(tmp_path / "data", n_train=16, n_test=4, seed=1)

    cfg = TrainConfig.from_dict({
        "model": {"name_or_path": str(base), "lora_r": 4, "init_latent_from": "white"},
        "data": {"task": "synth", "source": str(tmp_path / "data"), "val_size": 4},
        "curriculum": {"epochs_per_stage": 1, "max_latent_stage": 1},
        "optim": {"lr": 1e-2, "batch_size": 4},
        "latent": {"k": 2},
        "run": {"out_dir": str(tmp_path / "run"), "progress": False, "val_max_new_tokens": 8},
    })
    trainer = Trainer(cfg)
    trainer.run()
    model = trainer.s.model
    wrapped = [n for n, _ in model.named_modules() if n.endswith(".lora_A")]
    assert wrapped and all("language_model.layers" in n for n in wrapped) and len(wrapped) == 2 * 7
    emb = model.get_input_embeddings().weight
    src = trainer.s.tokenizer("white", add_special_tokens=False)["input_ids"][0]
    assert emb.shape[0] == len(tok) + 3 and all(torch.equal(emb[i], emb[src]) for i in (len(tok), len(tok) + 2))
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora" not in n)

    ckpt = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
    assert (ckpt / "model" / "adapter_model.safetensors").is_file()
    read = load_model(ckpt)
    loaded, tokenizer, loaded_cfg = read.model, read.tokenizer, read.config
    model.eval()
    from ivtlr.backbones import backbone_for, family_of
    from ivtlr.engine import LatentEngine

    assert read.family.name == "qwen2-vl" and read.placement.dtype == torch.float32  # its training dtype
    engine = LatentEngine(backbone_for(loaded, family_of(loaded).token_ids(tokenizer)), loaded_cfg.latent)
    ours = predict(trainer.s.engine, trainer.s.encoder, trainer.s.val, 1, 6)
    theirs = predict(engine, trainer.s.encoder, trainer.s.val, 1, 6)
    assert [r.output for r in ours] == [r.output for r in theirs]
    assert [r.selected for r in ours] == [r.selected for r in theirs]


def test_tie_embeddings_keeps_the_input_embeddings_and_drops_the_head(tmp_path):
    """scripts/tie_stage0.py: an untied tiny model tied, saved as a checkpoint and loaded again stays tied, with the
    input embeddings it had (its own output head gone)."""
    from ivtlr.checkpoint import save_checkpoint
    from ivtlr.models import build_tiny, load_model, tie_embeddings

    cfg = TrainConfig()
    cfg.model.tiny_hidden, cfg.model.tiny_layers, cfg.model.tiny_heads, cfg.model.tiny_tie_embeddings = 32, 1, 2, False
    model, tokenizer = build_tiny(cfg.model, ["red blue, the red cell has a blue dot"], seed=0)
    embed = model.get_input_embeddings().weight.detach().clone()
    assert not torch.equal(model.get_output_embeddings().weight, embed)  # untied: a head of its own
    tie_embeddings(model)
    path = save_checkpoint(tmp_path / "run", 1, model, tokenizer, cfg, {"stage": 0}, "stage-0-end", keep_last=1)
    loaded = load_model(path).model
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
    assert torch.equal(loaded.get_input_embeddings().weight, embed)


def test_tie_on_init_ties_an_untied_checkpoint_and_the_demo_unties_only_stage_0(tmp_path):
    """model.tie_on_init (the demo's cot_untied): the latent stages start tied from an untied stage 0."""
    import dataclasses

    from ivtlr.checkpoint import save_checkpoint
    from ivtlr.commands.demo import RECIPES, build_parser, recipe_from_args, train_config
    from ivtlr.models import build_tiny
    from ivtlr.train import build_model

    cfg = TrainConfig()
    cfg.model.tiny_hidden, cfg.model.tiny_layers, cfg.model.tiny_heads, cfg.model.tiny_tie_embeddings = 32, 1, 2, False
    model, tokenizer = build_tiny(cfg.model, ["red blue, the red cell has a blue dot"], seed=0)
    embed = model.get_input_embeddings().weight.detach().clone()
    path = save_checkpoint(tmp_path / "run", 1, model, tokenizer, cfg, {"stage": 0}, "stage-0-end", keep_last=1)
    for tie in (False, True):
        cfg.model = dataclasses.replace(cfg.model, init_from=str(path), tie_on_init=tie)
        got, _ = build_model(cfg, None, [], torch.device("cpu"), log=lambda m: None)
        assert (got.get_output_embeddings().weight is got.get_input_embeddings().weight) == tie
        assert torch.equal(got.get_input_embeddings().weight, embed)
    with pytest.raises(ValueError, match="set model.init_from"):
        dataclasses.replace(cfg.model, init_from=None, tie_on_init=True)

    recipe = RECIPES["full"]  # the default: stage 0 untied, the latent stages and No-CoT tied
    assert recipe.cot_untied and recipe.tie_embeddings and RECIPES["quick"].cot_untied
    cot, nocot = (train_config(recipe, tmp_path, tmp_path, "qwen2-vl", 0, p) for p in ("cot", "nocot"))
    latent = train_config(recipe, tmp_path, tmp_path, "qwen2-vl", 0, "latent", path)
    assert not cot.model.tiny_tie_embeddings and not cot.model.tie_on_init
    assert latent.model.tie_on_init and latent.model.tiny_tie_embeddings and nocot.model.tiny_tie_embeddings
    tied = dataclasses.replace(recipe, cot_untied=False)  # the recipe before (--no-cot-untied): tied throughout
    assert train_config(tied, tmp_path, tmp_path, "qwen2-vl", 0, "cot").model.tiny_tie_embeddings
    assert not train_config(tied, tmp_path, tmp_path, "qwen2-vl", 0, "latent", path).model.tie_on_init
    parser = build_parser()
    assert not recipe_from_args(parser.parse_args(["--no-cot-untied"]), parser)[0].cot_untied
    untied, _ = recipe_from_args(parser.parse_args(["--no-tie-embeddings"]), parser)  # untied throughout
    assert not untied.cot_untied
    assert not train_config(untied, tmp_path, tmp_path, "qwen2-vl", 0, "latent", path).model.tie_on_init
    with pytest.raises(SystemExit):  # untying stage 0 of an untied model means nothing: refused
        recipe_from_args(parser.parse_args(["--cot-untied", "--no-tie-embeddings"]), parser)
