"""The authors' own code on a tiny Chameleon (golden outputs) against this engine, through their checkpoint layout.

The fixture folder comes from ``IVTLR_REFERENCE_FIXTURE_CHAMELEON`` (default:
tests/fixtures/reference-chameleon-tiny); sizes, K, n and token ids are read from its own files, so any
fixture of the same layout can be checked. The layouts differ on purpose (see the fixture's README): cases 0-1
end with Chameleon's separator after the latent slots (teacher-forced before decoding, as "rest"), case 2 ends
with the latents, and case 3 (training) has no image start/end markers around its placeholders.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ivtlr.backbones import TokenIds, backbone_for
from ivtlr.backbones.chameleon import ChameleonBackbone
from ivtlr.batching import Sample, collate
from helpers import load_reference_fixture
from ivtlr.compat import CheckpointError, load_authors_checkpoint
from ivtlr.engine import LatentBatch, LatentConfig, LatentEngine

HERE = Path(__file__).resolve().parent
DEFAULT = HERE / "fixtures" / "reference-chameleon-tiny"
FIXTURE = Path(os.environ.get("IVTLR_REFERENCE_FIXTURE_CHAMELEON", DEFAULT))


@pytest.fixture(autouse=True, scope="module")
def _fixture_present():
    """A missing fixture fails (it never skips): the exactness claim rests on it."""
    if not all((FIXTURE / name).is_file() for name in ("expected.json", "cases.pt", "model.pth", "config.json")):
        pytest.fail(f"no complete reference fixture at {FIXTURE} (set IVTLR_REFERENCE_FIXTURE_CHAMELEON or restore tests/fixtures/)",
                    pytrace=False)
TOL = 1e-4


@pytest.fixture(scope="module")
def fixture():
    expected, cases, model = load_reference_fixture(FIXTURE)
    t = expected["token_ids"]
    tokens = TokenIds(latent=t["latent"], image=t["image"], eos=t["eos"], pad=t.get("pad", t["eos"]),
                      start_latent=t.get("start_latent"), end_latent=t.get("end_latent"))
    return expected, cases, backbone_for(model, tokens)


def _engine(expected, backbone, use_cache=True) -> LatentEngine:
    return LatentEngine(backbone, LatentConfig(k=expected["num_selected_patches"], patch_order="reference",
                                               positions="sequential", use_cache=use_cache))


def _batch(case) -> LatentBatch:
    ids = case["input_ids"]
    return LatentBatch(ids, torch.ones_like(ids), {"pixel_values": case["pixel_values"]}, case.get("labels"))


def _finite(logits: torch.Tensor) -> torch.Tensor:
    """Entries that are not Chameleon's masked image codes (``finfo.min``)."""
    return torch.isfinite(logits) & (logits > torch.finfo(torch.float32).min)


def _check_generation(out, b: int, want: dict, label: str):
    assert out.sequences[b].tolist() == want["generated"], f"{label}: generated tokens"
    assert out.selected[b] == want["selected_image_offsets_in_order"], f"{label}: insertion order"
    assert [sorted(s) for s in out.selected[b]] == want["selected_image_offsets"], f"{label}: selections"
    logits = torch.tensor(want["last_logits"])
    ours = out.first_logits[b]
    finite = _finite(logits)
    assert int(finite.sum()) == want.get("n_finite_logits", int(finite.sum()))
    assert torch.equal(_finite(ours), finite), f"{label}: the same entries are masked (image codes)"
    assert (ours[finite] - logits[finite]).abs().max().item() < TOL, f"{label}: last logits"


def test_fixture_is_what_this_test_assumes(fixture):
    expected, cases, backbone = fixture
    assert isinstance(backbone, ChameleonBackbone)
    assert len(cases) == len(expected["cases"])
    cfg = backbone.hf.config
    assert cfg.vocab_size == expected["vocab_size"] and cfg.image_token_id == expected["token_ids"]["image"]
    lo, hi = expected["token_ids"]["image_code_range"]
    assert backbone.image_code_ids == list(range(lo, hi))
    for case, want in zip(cases, expected["cases"]):
        ids = case["input_ids"][0]
        image = (ids == expected["token_ids"]["image"]).nonzero()[:, 0]
        assert len(image) == want["n_image_tokens"] == expected["n_image_tokens"]
        assert int(image[0]) == want["image_start"] and int(image[-1]) - int(image[0]) + 1 == len(image)
        assert int((ids == backbone.tokens.latent).sum()) == (1 if "loss" in want else expected["n_latents"])


def test_vq_tokenizer_gives_the_reference_image_codes(fixture):
    expected, cases, backbone = fixture
    side = int(expected["n_image_tokens"] ** 0.5)
    for i, (case, want) in enumerate(zip(cases, expected["cases"])):
        codes = backbone.image_codes(case["pixel_values"])
        assert codes.dtype == torch.long
        assert codes[0].tolist() == want["image_bpe_ids"], f"case {i}"
        assert backbone.image_grids({"pixel_values": case["pixel_values"]}) == [(side, side)]


@pytest.mark.parametrize("use_cache", [True, False], ids=["kv-cache", "recompute"])
def test_engine_reproduces_the_reference(fixture, use_cache):
    expected, cases, backbone = fixture
    engine = _engine(expected, backbone, use_cache)
    for i, (case, want) in enumerate(zip(cases, expected["cases"])):
        batch = _batch(case)
        if "loss" in want:
            with torch.no_grad():
                out = engine.forward(batch)
            assert abs(out.loss.item() - want["loss"]) < TOL, f"case {i}: loss"
            assert out.selected[0] == want["selected_image_offsets_in_order"], f"case {i}: insertion order"
            assert [sorted(s) for s in out.selected[0]] == want["selected_image_offsets"], f"case {i}: selections"
            continue
        out = engine.generate(batch, expected["max_new_tokens"])
        _check_generation(out, 0, want, f"case {i}")


def test_batched_inference_reproduces_the_reference(fixture):
    """All inference cases in one left-padded batch (the authors' code is only right for batch size 1)."""
    expected, cases, backbone = fixture
    latent = backbone.tokens.latent
    todo = [(case, want) for case, want in zip(cases, expected["cases"]) if "loss" not in want]
    samples = []
    for i, (case, _) in enumerate(todo):
        ids = case["input_ids"][0].tolist()
        samples.append(Sample(ids, ids.index(latent), vision={"pixel_values": case["pixel_values"]}, id=f"case{i}"))
    batch = collate(samples, backbone.tokens.pad)
    assert int((batch.attention_mask == 0).sum()) > 0  # the batch really is padded
    out = _engine(expected, backbone).generate(batch, expected["max_new_tokens"])
    for b, (_, want) in enumerate(todo):
        _check_generation(out, b, want, f"batched case {b}")


def test_wrong_checkpoint_is_a_clear_error(tmp_path):
    sd = torch.load(FIXTURE / "model.pth", weights_only=True)
    broken = tmp_path / "broken.pth"
    torch.save({k: v for k, v in sd.items() if "vqmodel.encoder.conv_in" not in k}, broken)
    with pytest.raises(CheckpointError, match=r"broken\.pth does not fit a 'chameleon' model: missing .*conv_in"):
        load_authors_checkpoint(broken, FIXTURE)
    other = HERE / "fixtures" / "reference-qwen2vl-tiny" / "model.pth"
    with pytest.raises(CheckpointError, match="does not fit a 'chameleon' model"):
        load_authors_checkpoint(other, FIXTURE)
