"""Generation-based evaluation: batched answers through the latent engine, scored by the task's judges.

``predict`` runs any mode (IVT-LR with n latent steps, chain-of-thought with n = 0 and a long budget, No-CoT,
ablations through the engine's config) and returns one record per question with the generated text, the
autoregressive steps and the selected patches; ``score_predictions`` turns them into the task's report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .batching import collate
from .curriculum import EncodedExample, inference_sample
from .engine import LatentEngine


@dataclass
class PredictionRecord:
    id: str
    output: str  # generated text, special tokens removed
    n_generated: int  # autoregressive steps (tokens generated, eos included)
    selected: list[list[int]]  # per latent step, image-token offsets in insertion order
    seconds: float  # wall time of this question's batch divided by the batch size


def predict(
    engine: LatentEngine,
    encoder,
    examples: list[EncodedExample],
    n_latents: int,
    max_new_tokens: int,
    batch_size: int = 16,
    progress=None,
) -> list[PredictionRecord]:
    """Generate for every example (batched, in order). ``progress(done, total)`` is called after each batch."""
    tokens = engine.backbone.tokens
    out: list[PredictionRecord] = []
    device = engine.backbone.device
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = collate([inference_sample(ex, n_latents, tokens.latent) for ex in chunk], tokens.pad).to(device)
        t0 = time.perf_counter()
        gen = engine.generate(batch, max_new_tokens)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_question = (time.perf_counter() - t0) / len(chunk)
        for b, ex in enumerate(chunk):
            n = gen.num_generated[b]
            text = encoder.decode(gen.sequences[b, :n].tolist())
            out.append(PredictionRecord(ex.id, text, n, gen.selected[b], per_question))
        if progress is not None:
            progress(len(out), len(examples))
    return out


def score_predictions(task, examples_by_id: dict, records: list[PredictionRecord], judge: str | None = "all"):
    """The task's ScoreReport for predictions (every judge side by side by default)."""
    return task.score([(examples_by_id[r.id], r.output) for r in records], judge)
