"""Where a model runs and in which dtype: the project's one device and dtype policy, each choice with its reason.

Training, ``eval``, ``infer``, ``analyze``, ``bench`` and the demo all ask ``place``:
- device: the one asked for, else the first CUDA GPU, else the CPU;
- dtype: the one asked for; else, for a LoRA checkpoint, the dtype its base was trained in; else bfloat16 on a GPU
  that supports it; else bfloat16 for pretrained weights (a 7B model in float32 would take 30 GB instead of 15;
  float16 on a GPU without bfloat16); else float32 (tiny from-scratch models on a CPU).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype
    reason: str

    def __str__(self) -> str:
        return f"device {self.device}, dtype {str(self.dtype).replace('torch.', '')} ({self.reason})"


def choose_device(requested: str | torch.device | None = None) -> torch.device:
    if requested is not None:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _bf16_gpu(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def place(dtype: str = "auto", device: str | torch.device | None = None, pretrained: bool = False,
          trained_dtype: str | None = None) -> Placement:
    """The device and dtype of a model, and why.

    Args:
        dtype: "auto", or a name in ``DTYPES`` (then it is used as asked).
        device: a device name, or None for the first CUDA GPU, else the CPU.
        pretrained: the model has pretrained (large) weights, not a tiny from-scratch model.
        trained_dtype: the dtype a LoRA checkpoint's base was trained in (from its meta.json), if known.
    Raises:
        ValueError for an unknown dtype name.
    """
    dev = choose_device(device)
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (auto, {', '.join(DTYPES)})")
        return Placement(dev, DTYPES[dtype], f"asked for {dtype}")
    if trained_dtype in DTYPES:
        return Placement(dev, DTYPES[trained_dtype], f"the LoRA base was trained in {trained_dtype}")
    if _bf16_gpu(dev):
        return Placement(dev, torch.bfloat16, f"{torch.cuda.get_device_name(dev)} supports bfloat16")
    if pretrained:
        if dev.type == "cuda":
            return Placement(dev, torch.float16, "pretrained weights on a GPU without bfloat16")
        return Placement(dev, torch.bfloat16, "pretrained weights on the CPU: half the memory of float32")
    return Placement(dev, torch.float32, "a tiny model" + (" on the CPU" if dev.type == "cpu" else " on a GPU without bfloat16"))


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the OS has one (``taskset``, a container's
    cpuset, a test worker pinned to one core), else every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe_cpu() -> str:
    """The CPU's model and the vector instructions torch's kernels use on it, e.g. "AMD EPYC, AVX512". Float results
    of the same computation can differ between CPUs (their math libraries pick other kernels, which round
    differently), so a training run repeats exactly only on a CPU that computes alike."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {torch.backends.cpu.get_cpu_capability()}"
