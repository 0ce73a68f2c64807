"""Real architectures without weights: each preset, built on the meta device from its published config values,
has the published parameter count and is served by its own backbone family."""

from __future__ import annotations

import pytest

from ivtlr.backbones import PRESETS, build_preset, family_of


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_has_the_published_size(name):
    preset = PRESETS[name]
    model = build_preset(name)  # meta device: no memory, no download
    params = sum(p.numel() for p in model.parameters())
    assert abs(params / preset.published_params - 1) < 0.001, f"{name}: {params:,} vs {preset.published_params:,.0f}"
    assert family_of(model) is preset.family
    assert next(model.parameters()).device.type == "meta"


def test_a_cut_preset_keeps_width_and_drops_layers():
    full, cut = build_preset("qwen2-vl-7b"), build_preset("qwen2-vl-7b", layers=2)
    per_layer = (sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in cut.parameters())) / 26
    assert cut.config.text_config.num_hidden_layers == 2 and cut.config.text_config.hidden_size == 3584
    assert 2.2e8 < per_layer < 2.4e8  # one Qwen2-7B decoder layer: 233M parameters


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="qwen2-vl-7b"):
        build_preset("llama-70b")
