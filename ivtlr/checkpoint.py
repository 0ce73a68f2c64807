"""Run checkpoints: written atomically, pruned to the last k, loaded for resuming or for inference.

Layout of ``<out_dir>/checkpoints/step-000120/``::

    config.yaml         the resolved TrainConfig
    model/              full weights (safetensors, a tiny model) or a PEFT LoRA adapter (pretrained models)
    tokenizer/          the tokenizer with the latent tokens
    trainer_state.pt    step, epoch, batch position, stage, optimizer, scheduler, RNG states
    meta.json           step, stage, tag (e.g. "stage-1-end"), the model kind and its dtype
    checksums.json      size and SHA-256 of every other file, verified when the checkpoint is loaded

A checkpoint is written into ``.tmp-step-000120`` and renamed when complete: a crash (or a full disk) never
leaves a half-written checkpoint that ``--resume`` would pick, and the previous checkpoints stay intact.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from .backbones.base import unwrap_peft


CHECKSUMS = "checksums.json"


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, corrupt or not this project's; the message names the file."""


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_checksums(folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)
    sums = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    (folder / CHECKSUMS).write_text(json.dumps(sums, indent=1))


def verify_checkpoint(path: str | Path) -> None:
    """Check every file of a checkpoint against its checksums.json; raise CheckpointError naming the first bad one.

    Checkpoints written before checksums existed (no checksums.json) are accepted as they are."""
    path = Path(path)
    listing = path / CHECKSUMS
    if not listing.is_file():
        return
    try:
        sums = json.loads(listing.read_text())
    except (ValueError, OSError) as err:
        raise CheckpointError(f"{listing}: unreadable ({err})") from None
    for name, want in sums.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing (the checkpoint is incomplete)")
        size = file.stat().st_size
        if size != want["size"]:
            raise CheckpointError(f"{file}: {size} bytes, but {want['size']} were written (truncated or replaced)")
        if _sha256(file) != want["sha256"]:
            raise CheckpointError(f"{file}: its contents changed since it was written (checksum mismatch: corrupt)")


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
    """Every RNG's state, in types ``torch.load(weights_only=True)`` accepts (numpy's key array as a tensor)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
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
    try:
        _write(tmp, step, model, tokenizer, config, trainer_state, tag)
    except OSError as err:  # a full disk, a quota: the previous checkpoints are untouched
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(err.errno, f"writing checkpoint {final} failed ({err.strerror or err}); nothing was replaced, "
                                 "the previous checkpoints are intact", str(tmp)) from err
    if final.exists():  # a re-run of the same step after a resume: replace
        shutil.rmtree(final)
    tmp.rename(final)
    existing = list_checkpoints(out_dir)
    keep = protect | {final.name}  # never the checkpoint just written
    removable = [p for p in existing[:-keep_last] if p.name not in keep] if keep_last > 0 else []
    for old in removable:
        shutil.rmtree(old)
    return final


def _write(tmp: Path, step: int, model, tokenizer, config, trainer_state: dict, tag: str) -> None:
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
    write_checksums(tmp)


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
    try:
        return json.loads(meta.read_text())
    except ValueError as err:
        raise CheckpointError(f"{meta}: not valid JSON ({err})") from None


def load_trainer_state(path: str | Path) -> dict:
    """The trainer state of a checkpoint, read with ``weights_only=True``: a file that needs arbitrary unpickling
    (which could run code) is refused, never executed."""
    file = Path(path) / "trainer_state.pt"
    try:
        return torch.load(file, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{file}: refused: it is not a weights-only file (unpickling it could run code; "
                              f"{' '.join(str(err).split())[:160]})") from None
    except Exception as err:  # noqa: BLE001  (torch raises RuntimeError, EOFError, UnpicklingError, ...)
        raise CheckpointError(f"{file}: unreadable ({type(err).__name__}: {err})") from None


def load_weights(model, path: str | Path) -> None:
    """Load a checkpoint's weights into an already built model of the same kind (resume, inference). Errors name
    the file: CheckpointError for an unreadable one, ValueError for weights that do not fit the model."""
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
        missing, unexpected = _load_safetensors(model, file, load_model)
        if missing or unexpected:
            raise ValueError(f"{file}: weights do not fit the model of its config (another architecture or size?): "
                             f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")


def _load_safetensors(model, file: Path, loader) -> tuple[list[str], list[str]]:
    """``loader(model, file, strict=False)`` with an unreadable file named in a CheckpointError."""
    try:
        return loader(model, str(file), strict=False)
    except Exception as err:  # noqa: BLE001  (SafetensorError, OSError, RuntimeError on shape mismatch)
        raise CheckpointError(f"{file}: cannot load weights ({type(err).__name__}: {' '.join(str(err).split())[:300]})") from None
