"""Run checkpoints: written atomically, pruned to the last k, loaded for resuming or for inference.

Layout of ``<out_dir>/checkpoints/step-000120/``::

    config.yaml         the resolved TrainConfig
    model/              full weights (safetensors, a tiny model) or a PEFT LoRA adapter (pretrained models)
    tokenizer/          the tokenizer with the latent tokens
    trainer_state.pt    step, epoch, batch position, stage, optimizer, scheduler, RNG states
    meta.json           step, stage, tag (e.g. "stage-1-end"), the model kind and its dtype

A checkpoint is written into ``.tmp-step-000120`` and renamed when complete: a crash never leaves a
half-written checkpoint that ``--resume`` would pick.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from .backbones.base import unwrap_peft


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_dir(out_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.name.startswith("step-") and (p / "meta.json").is_file()),
                  key=lambda p: int(p.name.split("-")[1]))


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir, step: int, model, tokenizer, config, trainer_state: dict, tag: str, keep_last: int,
                    protect: set[str] = frozenset()) -> Path:
    """Write a checkpoint atomically and delete the oldest beyond ``keep_last`` (except names in ``protect``)."""
    root = checkpoint_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    is_peft = unwrap_peft(model) is not model
    if is_peft:
        model.save_pretrained(tmp / "model", safe_serialization=True)  # the PEFT adapter
    else:  # full weights under this package's (transformers 5.x) module names, and the model config
        from safetensors.torch import save_model

        (tmp / "model").mkdir()
        model.config.save_pretrained(tmp / "model")
        save_model(model, str(tmp / "model" / "model.safetensors"))
    tokenizer.save_pretrained(tmp / "tokenizer")
    config.save(tmp / "config.yaml")
    torch.save(trainer_state, tmp / "trainer_state.pt")
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")  # a LoRA base is rebuilt in it
    (tmp / "meta.json").write_text(json.dumps({"step": step, "tag": tag, "stage": trainer_state.get("stage"),
                                               "kind": "lora" if is_peft else "full", "dtype": dtype}))
    if final.exists():  # a re-run of the same step after a resume: replace
        shutil.rmtree(final)
    tmp.rename(final)
    existing = list_checkpoints(out_dir)
    removable = [p for p in existing[:-keep_last] if p.name not in protect] if keep_last > 0 else []
    for old in removable:
        shutil.rmtree(old)
    return final


def stage_checkpoints(run: str | Path) -> dict[int, Path]:
    """stage -> the checkpoint saved at that stage's end, for one run folder."""
    out = {}
    for path in list_checkpoints(run):
        tag = read_meta(path)["tag"]
        if tag.startswith("stage-") and tag.endswith("-end"):
            out[int(tag.split("-")[1])] = path
    return out


def read_meta(path: str | Path) -> dict:
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{path} is not a complete ivtlr checkpoint (no meta.json)")
    return json.loads(meta.read_text())


def load_weights(model, path: str | Path) -> None:
    """Load a checkpoint's weights into an already built model of the same kind (resume)."""
    path = Path(path) / "model"
    if unwrap_peft(model) is not model:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
    else:
        from safetensors.torch import load_model

        file = path / "model.safetensors"
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no weights")
        missing, unexpected = load_model(model, str(file), strict=False)
        if missing or unexpected:
            raise ValueError(f"{file}: weights do not fit the model: missing {sorted(missing)[:3]}, "
                             f"unexpected {sorted(unexpected)[:3]}")
