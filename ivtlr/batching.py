"""Batching for the latent engine: left-pad so every sample's first latent slot aligns.

::

    sample 0:  [pad pad | p p p p p | L L L | s s a a e ]
    sample 1:  [p p p p p p p | L L L | s a a e | pad pad]
                             ^ p: the first latent slot, the same index in every row

The latent passes then run in lockstep over the batch; text after the latents is right-padded. A sample with
no latent slots aligns the end of its prompt at the same index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .engine import LatentBatch


@dataclass
class Sample:
    """One tokenised example: ``input_ids = prompt + latent slots + rest``.

    ``prompt_len`` is the number of ids before the latent slots (where the rest starts if there are none);
    ``labels`` has -100 over the prompt and the latent slots; ``vision`` holds this sample's image inputs in
    the backbone's per-image layout (Qwen2-VL: pixel_values (patches, 1176), image_grid_thw (1, 3)).
    """

    input_ids: list[int]
    prompt_len: int
    labels: list[int] | None = None
    vision: dict[str, torch.Tensor] = field(default_factory=dict)
    id: str | None = None

    def __post_init__(self):
        if not 0 <= self.prompt_len <= len(self.input_ids):
            raise ValueError(f"sample {self.id!r}: prompt_len {self.prompt_len} outside 0..{len(self.input_ids)}")
        if self.labels is not None and len(self.labels) != len(self.input_ids):
            raise ValueError(f"sample {self.id!r}: {len(self.labels)} labels for {len(self.input_ids)} ids")


def collate_vision(visions: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate per-sample image inputs along dim 0 (Qwen2-VL patches and grids; Chameleon images)."""
    keys = {k for v in visions for k in v}
    for key in keys:
        if not all(key in v for v in visions):
            raise ValueError(f"some samples of the batch have '{key}' and others do not (mixing image/no image)")
    return {key: torch.cat([v[key] for v in visions], 0) for key in sorted(keys)}


def collate(samples: list[Sample], pad_id: int) -> LatentBatch:
    """Left-pad to align the latent slots (``prompt_len``), right-pad the rest; labels -100 on padding."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    left = max(s.prompt_len for s in samples)
    width = max(left - s.prompt_len + len(s.input_ids) for s in samples)
    B = len(samples)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    mask = torch.zeros((B, width), dtype=torch.long)
    with_labels = samples[0].labels is not None
    labels = torch.full((B, width), -100, dtype=torch.long) if with_labels else None
    for b, s in enumerate(samples):
        if (s.labels is not None) != with_labels:
            raise ValueError("either every sample of a batch has labels or none has")
        a = left - s.prompt_len
        ids[b, a:a + len(s.input_ids)] = torch.tensor(s.input_ids)
        mask[b, a:a + len(s.input_ids)] = 1
        if with_labels:
            labels[b, a:a + len(s.input_ids)] = torch.tensor(s.labels)
    names = [s.id for s in samples] if all(s.id is not None for s in samples) else None
    return LatentBatch(ids, mask, collate_vision([s.vision for s in samples]), labels, names)
