"""The one device and dtype policy (``ivtlr.placement``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ivtlr.placement import describe_cpu, place, usable_cores


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


def test_the_cpu_is_named_with_the_kernels_torch_uses_on_it(monkeypatch):
    name = describe_cpu()
    assert name.endswith(", " + torch.backends.cpu.get_cpu_capability()) and len(name) > len(", AVX2")
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(OSError("no /proc")))
    assert describe_cpu().endswith(torch.backends.cpu.get_cpu_capability())  # no /proc/cpuinfo: platform's name


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_usable_cores_follow_the_affinity_mask():
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from ivtlr.placement import usable_cores; print(usable_cores())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1"
    assert usable_cores() == len(os.sched_getaffinity(0))
