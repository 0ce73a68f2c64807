"""The authors' own code on a tiny Qwen2-VL (golden outputs) against this engine, through their checkpoint layout.

The fixture folder comes from ``IVTLR_REFERENCE_FIXTURE`` (default: tests/fixtures/reference-qwen2vl-tiny);
sizes, K, n and token ids are read from its own files, so any fixture of the same layout can be checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ivtlr.backbones import TokenIds, backbone_for
from helpers import load_reference_fixture
from ivtlr.compat import CheckpointError, load_authors_checkpoint
from ivtlr.engine import LatentBatch, LatentConfig, LatentEngine

HERE = Path(__file__).resolve().parent
DEFAULT = HERE / "fixtures" / "reference-qwen2vl-tiny"
FIXTURE = Path(os.environ.get("IVTLR_REFERENCE_FIXTURE", DEFAULT))


@pytest.fixture(autouse=True, scope="module")
def _fixture_present():
    """A missing fixture fails (it never skips): the exactness claim rests on it."""
    if not all((FIXTURE / name).is_file() for name in ("expected.json", "cases.pt", "model.pth", "config.json")):
        pytest.fail(f"no complete reference fixture at {FIXTURE} (set IVTLR_REFERENCE_FIXTURE or restore tests/fixtures/)",
                    pytrace=False)


@pytest.fixture(scope="module")
def fixture():
    expected, cases, model = load_reference_fixture(FIXTURE)
    t = expected["token_ids"]
    tokens = TokenIds(latent=t["latent"], image=t["image_pad"], eos=t["eos"], pad=t.get("pad", t["eos"]))
    return expected, cases, backbone_for(model, tokens)


def _batch(case) -> LatentBatch:
    ids = case["input_ids"]
    vision = {"pixel_values": case["pixel_values"], "image_grid_thw": case["image_grid_thw"]}
    return LatentBatch(ids, torch.ones_like(ids), vision, case.get("labels"))


@pytest.mark.parametrize("use_cache", [True, False], ids=["kv-cache", "recompute"])
def test_engine_reproduces_the_reference(fixture, use_cache):
    expected, cases, backbone = fixture
    engine = LatentEngine(backbone, LatentConfig(k=expected["num_selected_patches"], patch_order="reference",
                                                 positions="sequential", use_cache=use_cache))
    assert len(cases) == len(expected["cases"])
    for i, (case, want) in enumerate(zip(cases, expected["cases"])):
        batch = _batch(case)
        if "loss" in want:
            with torch.no_grad():
                out = engine.forward(batch)
            assert abs(out.loss.item() - want["loss"]) < 1e-4, f"case {i}"
            continue
        n_latents = int((case["input_ids"] == backbone.tokens.latent).sum())
        assert n_latents == expected["n_latents"]
        out = engine.generate(batch, expected["max_new_tokens"])
        assert out.sequences[0].tolist() == want["generated"], f"case {i}: generated tokens"
        assert out.selected[0] == want["selected_image_offsets_in_order"], f"case {i}: insertion order"
        assert [sorted(s) for s in out.selected[0]] == want["selected_image_offsets"], f"case {i}: selections"
        logits = torch.tensor(want["last_logits"])
        assert (out.first_logits[0] - logits).abs().max().item() < 1e-4, f"case {i}: last logits"


def test_module_prefix_and_safetensors_load_the_same(fixture, tmp_path):
    """DeepSpeed/DDP checkpoints carry ``module.``; safetensors files load like .pth."""
    from safetensors.torch import save_file

    expected, _, backbone = fixture
    sd = torch.load(FIXTURE / "model.pth", weights_only=True)
    prefixed = tmp_path / "ckpt.pth"
    torch.save({"module." + k: v for k, v in sd.items()}, prefixed)
    st = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items() if k != "embedding.weight"}, str(st))
    reference = backbone.model.state_dict()
    for path in (prefixed, st):
        model = load_authors_checkpoint(path, FIXTURE)
        for key, value in model.state_dict().items():
            assert torch.equal(value, reference[key]), (path.name, key)


def test_wrong_checkpoint_is_a_clear_error(tmp_path):
    sd = torch.load(FIXTURE / "model.pth", weights_only=True)
    broken = tmp_path / "broken.pth"
    torch.save({k: v for i, (k, v) in enumerate(sd.items()) if i != 5}, broken)
    with pytest.raises(CheckpointError, match=r"broken\.pth does not fit a 'qwen2_vl' model: missing"):
        load_authors_checkpoint(broken, FIXTURE)
    pickled = tmp_path / "pickled.pth"
    torch.save({"x": object()}, pickled)
    with pytest.raises(CheckpointError, match="pickled.pth: cannot be read"):
        load_authors_checkpoint(pickled, FIXTURE)
    other = HERE / "fixtures" / "reference-chameleon-tiny" / "model.pth"
    with pytest.raises(CheckpointError, match="does not fit a 'qwen2_vl' model"):
        load_authors_checkpoint(other, FIXTURE)
