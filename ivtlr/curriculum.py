"""The progressive latent curriculum: which tokens a training sample has at stage s.

Stage 0 is chain-of-thought: ``prompt + step_1 .. step_m + answer``. Stage s >= 1 replaces the first s steps by
s latent slots: ``prompt + <|latent|> x n + step_{n+1} .. step_m + answer`` with n = min(s, m) (or s with
``pad_latent_to_max``). Labels are -100 over the prompt and the latent slots; the loss is on the rest. No
start/end latent markers (the authors' default). A No-CoT baseline trains ``prompt + answer``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import torch

from .batching import Sample
from .config import CurriculumConfig

logger = logging.getLogger(__name__)


@dataclass
class EncodedExample:
    """An example tokenised once; samples of any stage are cut from it."""

    id: str
    prompt_ids: list[int]  # training prompt (ends with the assistant prefix)
    infer_prompt_ids: list[int]  # inference prompt (the same under prompt_style="aligned")
    vision: dict[str, torch.Tensor]
    step_ids: list[list[int]]  # each step + "\n"
    answer_ids: list[int]  # "Therefore, the answer is X" + eos
    n_image_tokens: int


def encode_example(task, encoder, example, image_token_id: int) -> EncodedExample:
    """Tokenise one task example with a backbone's prompt encoder."""
    prompt_ids, vision = encoder.encode_prompt(task.prompt(example, "train"), example.image)
    if task.prompt(example, "infer") == task.prompt(example, "train"):
        infer_ids = prompt_ids
    else:
        infer_ids, _ = encoder.encode_prompt(task.prompt(example, "infer"), example.image)
    steps = [encoder.encode_text(s) for s in task.step_targets(example)]
    answer = encoder.encode_text(task.answer_text(example)) + [encoder.eos_id]
    return EncodedExample(example.id, prompt_ids, infer_ids, vision, steps, answer,
                          sum(1 for i in prompt_ids if i == image_token_id))


class Curriculum:
    """Builds stage-s training samples (with truncation and optional stage mixing).

    Args:
        config: the curriculum options.
        latent_id: id of ``<|latent|>``.
        max_length: longest sample; longer ones drop trailing explicit steps (never the answer), counted in
            ``self.truncated`` and reported once.
        seed: stage mixing draws from ``Random(seed, step)``, so a resumed run mixes identically.
    """

    def __init__(self, config: CurriculumConfig, latent_id: int, max_length: int = 2048, seed: int = 0):
        self.config = config
        self.latent_id = latent_id
        self.max_length = max_length
        self.seed = seed
        self.truncated = 0

    def n_latents(self, stage: int, n_steps: int) -> int:
        if self.config.no_cot:
            return 0
        return stage if self.config.pad_latent_to_max else min(stage, n_steps)

    def sample(self, ex: EncodedExample, stage: int, rng: random.Random | None = None) -> Sample:
        """The training sample of ``ex`` at ``stage``. Raises ValueError if even prompt + answer is too long."""
        cfg = self.config
        if (rng is not None and cfg.stage_ahead_prob > 0 and 0 < stage < cfg.max_latent_stage
                and rng.random() < cfg.stage_ahead_prob):
            stage = cfg.max_latent_stage  # the final all-latent layout, seen early
        elif rng is not None and cfg.stage_mix_prob > 0 and stage > 0 and rng.random() < cfg.stage_mix_prob:
            stage = rng.randint(0, stage - 1)
        n = self.n_latents(stage, len(ex.step_ids))
        explicit = [] if self.config.no_cot else list(ex.step_ids[n:])
        fixed = len(ex.prompt_ids) + n + len(ex.answer_ids)
        if fixed > self.max_length:
            raise ValueError(f"record {ex.id!r}: prompt + latents + answer = {fixed} tokens exceeds max_length "
                             f"{self.max_length}")
        dropped = 0
        while explicit and fixed + sum(map(len, explicit)) > self.max_length:
            explicit.pop()
            dropped += 1
        if dropped:
            self.truncated += 1
            if self.truncated == 1:
                logger.warning("record %r: dropped its last %d explicit step(s) to fit max_length %d (further "
                               "truncations are counted, not logged)", ex.id, dropped, self.max_length)
        rest = [t for step in explicit for t in step] + ex.answer_ids
        ids = ex.prompt_ids + [self.latent_id] * n + rest
        labels = [-100] * (len(ex.prompt_ids) + n) + rest
        return Sample(ids, len(ex.prompt_ids), labels, ex.vision, id=ex.id)

    def mixing_rng(self, step: int) -> random.Random:
        return random.Random(self.seed * 1_000_003 + step)


def inference_sample(ex: EncodedExample, n_latents: int, latent_id: int) -> Sample:
    """``inference prompt + <|latent|> x n`` (the model then generates the rest)."""
    return Sample(ex.infer_prompt_ids + [latent_id] * n_latents, len(ex.infer_prompt_ids), None, ex.vision, id=ex.id)
