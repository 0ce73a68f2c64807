"""The one device and dtype policy (``ivtlr.placement``)."""

from __future__ import annotations

import pytest
import torch

from ivtlr.placement import place


def test_asked_for_wins():
    where = place("bfloat16", "cpu")
    assert (where.device.type, where.dtype) == ("cpu", torch.bfloat16) and "asked" in where.reason


def test_tiny_models_on_the_cpu_stay_float32():
    assert place("auto", "cpu").dtype == torch.float32


def test_pretrained_weights_never_load_in_float32_by_default():
    where = place("auto", "cpu", pretrained=True)
    assert where.dtype == torch.bfloat16 and "pretrained" in where.reason


def test_a_lora_base_is_rebuilt_in_its_training_dtype():
    where = place("auto", "cpu", pretrained=True, trained_dtype="float32")
    assert where.dtype == torch.float32 and "trained in float32" in where.reason
    assert place("float16", "cpu", trained_dtype="float32").dtype == torch.float16  # still overridable


def test_bf16_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Test GPU")
    where = place("auto", "cuda")
    assert where.dtype == torch.bfloat16 and "Test GPU supports bfloat16" in str(where)


def test_unknown_dtype_is_named():
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        place("fp8", "cpu")
