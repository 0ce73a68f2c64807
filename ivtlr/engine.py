"""The IVT-LR latent engine: latent passes, image-token selection, the training loss and batched generation.

One question goes through (docs/engine.md has the exact semantics)::

    prompt (with image tokens) | <|latent|> x n | rest (explicit steps + answer, or nothing at inference)

    prefill  : run the prompt once; keep the KV cache, the last hidden state h and the last row's attention
    latent t : pick the top-K not-yet-picked image tokens by that attention (mean over layers and heads),
               append [z_t (K image embeddings), h_t] to the cache, read the new last row -> h_{t+1}
    rest     : training: teacher-force the rest, loss on it only; inference: greedy decoding from h_n

Every pass only appends to the sequence, so the KV cache is exact: each latent pass costs K + 1 positions,
not a re-run of the whole prefix as in the authors' code. A batch runs its latent passes in lockstep: the
collator left-pads so that every sample's first latent slot is at the same index p. A sample with fewer
latent slots than the batch maximum gets masked-out dummy chunks for the passes it does not have, so it
computes exactly what it would alone.

Position ids ("sequential" mode) count the real tokens before each position (0..L-1 over the growing
sequence, padding skipped): the authors' rule for one unpadded question, and padding-invariant in a batch.

This module knows nothing about any particular model: everything model-specific goes through
``ivtlr.backbones.base.Backbone``.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from .attention import attention_measures, mean_last_row, record_last_row
from .backbones.base import Backbone


@dataclass
class LatentConfig:
    """How the latent steps are computed. Defaults follow the authors' code except ``patch_order``."""

    k: int = 32
    """Image tokens re-inserted per latent step (latent vision). 32 for Qwen2-VL, 64 for Chameleon in the paper."""
    positions: Literal["sequential", "mrope"] = "sequential"
    """sequential: 1-D ids over the growing sequence (authors). mrope: the model's 3-D ids for the prompt; every
    appended embedding (inserted image embeddings, fed-back states, text after them) then takes the next 1-D
    position, as text after an image does in Qwen2-VL."""
    latent_grad: Literal["detach", "full"] = "detach"
    """detach: no gradient through the fed-back hidden state (authors). full: backprop through it (Coconut)."""
    order: Literal["vision_first", "text_first"] = "vision_first"
    """Per latent step: [z_t, h_t] (authors' code) or [h_t, z_t] (the paper's formula)."""
    selection: Literal["behind", "ahead"] = "behind"
    """Which attention row picks z_t. behind (authors): the row of the position whose state is h_t, the position
    that has just done the previous step's read. ahead (outside the method; needs ``order="text_first"``): h_t is
    appended first and its own slot's row picks z_t, which follows it: the patch is what latent step t's position
    reads, and the next fed-back state comes from the patch's position (one more pass of one position per
    step). Measured in docs/latent-reasoning.md ("Does latent vision carry anything?")."""
    patch_order: Literal["reference", "score", "raster"] = "score"
    """Order of the K embeddings inside z_t. reference: what ``torch.topk(sorted=False)`` returns on CPU for the
    image-span slice of the score row (reproduces the authors' code); score: descending attention; raster:
    ascending image position."""
    latent_text: bool = True
    """Ablation switch. False: the latent slot keeps the ``<|latent|>`` token's embedding instead of h_t."""
    latent_vision: bool = True
    """Ablation switch. False: no image embeddings are inserted (K = 0), only h_t."""
    feedback_norm: Literal["none", "embedding"] = "none"
    """Scale of the fed-back state h_t. none: the raw last-layer state after the final norm (authors), whose
    length is about sqrt(D) times the final norm's weight, typically far above the token embeddings' (a freshly
    initialised tiny model: about 11 against 0.2). embedding: h_t rescaled to the mean length of the input
    embedding matrix's rows (a constant of the model, no gradient through it), so a latent slot enters the
    residual stream at the scale of a token."""
    state_dropout: float = 0.0
    """Training only, outside the method (0 = the authors). The probability that a fed-back state h_t is replaced
    by zeros, drawn per sample and latent step from torch's random generator: a regulariser that takes the state's
    shortcut away now and then, so that the next latent step has to read what the previous one found from the
    re-inserted image tokens instead (measured in docs/latent-reasoning.md). Inference never drops a state."""
    use_cache: bool = True
    """False: recompute the whole sequence on every pass (the authors' schedule; needed with layer checkpointing)."""
    decode: Literal["eager", "compiled"] = "eager"
    """Inference only. eager: a growing KV cache, each pass run op by op. compiled: a static-shape KV cache sized
    for the whole question (prompt, latent passes, answer budget) and the one-token decode step under
    ``torch.compile`` (CUDA graphs on a GPU): the same tokens and selections (tests/test_compiled.py), after a
    one-off compile per batch size. The prefill and the latent passes (whose attention row is read for the top-K)
    stay eager, on the same static cache."""

    def __post_init__(self):
        if self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
        if not 0.0 <= self.state_dropout < 1.0:
            raise ValueError(f"state_dropout must be in [0, 1), got {self.state_dropout}")
        for name, allowed in (
            ("positions", ("sequential", "mrope")),
            ("latent_grad", ("detach", "full")),
            ("order", ("vision_first", "text_first")),
            ("selection", ("behind", "ahead")),
            ("patch_order", ("reference", "score", "raster")),
            ("feedback_norm", ("none", "embedding")),
            ("decode", ("eager", "compiled")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.selection == "ahead" and self.order != "text_first":
            raise ValueError("selection='ahead' picks z_t with the row of h_t's own slot, so z_t follows h_t: it "
                             "needs order='text_first'")

    @property
    def k_effective(self) -> int:
        return self.k if self.latent_vision else 0


@dataclass(frozen=True)
class Intervention:
    """A causal intervention on the latent steps, for analysis (``LatentEngine.generate(..., intervention=)``).

    ``state`` replaces the fed-back state h_t: ``zero`` by zeros, ``shuffle`` by another question's h_t (the
    batch rolled by one, so a batch needs at least 2 questions), ``noise`` by Gaussian noise of the same length.
    ``vision`` replaces latent vision's top-K: ``random`` by K image tokens drawn uniformly from those not yet
    picked, ``lowest`` by the K lowest-scored ones, ``zero`` keeps the selection but inserts zero vectors in place of
    the selected embeddings (the positions stay, the content goes). Both apply at the latent steps in ``steps`` (1-based), or at
    every step when ``steps`` is None. Everything else runs unchanged; draws are seeded by ``seed`` and the step.
    """

    state: Literal["zero", "shuffle", "noise"] | None = None
    vision: Literal["random", "lowest", "zero"] | None = None
    steps: tuple[int, ...] | None = None
    seed: int = 0

    def __post_init__(self):
        if self.state not in (None, "zero", "shuffle", "noise"):
            raise ValueError(f"state must be None, 'zero', 'shuffle' or 'noise', got {self.state!r}")
        if self.vision not in (None, "random", "lowest", "zero"):
            raise ValueError(f"vision must be None, 'random', 'lowest' or 'zero', got {self.vision!r}")
        if self.steps is not None and any(t < 1 for t in self.steps):
            raise ValueError(f"steps are 1-based latent steps, got {self.steps}")

    def applies(self, t: int) -> bool:
        return self.steps is None or t in self.steps

    def generator(self, device, t: int) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed * 1_000 + t)


@dataclass
class LatentBatch:
    """One batch in the engine's layout: ``[left pad | prompt | <|latent|> x n_b | rest | right pad]``.

    ``vision`` holds the backbone's image inputs (Qwen2-VL: pixel_values, image_grid_thw). ``ids`` name the
    records in error messages.
    """

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    vision: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: torch.Tensor | None = None  # (B, T), -100 where no loss
    ids: list[str] | None = None

    def name(self, b: int) -> str:
        return f"record {self.ids[b]!r}" if self.ids else f"sample {b} of the batch"

    def to(self, device) -> "LatentBatch":
        move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return LatentBatch(
            move(self.input_ids), move(self.attention_mask), {k: move(v) for k, v in self.vision.items()},
            move(self.labels), self.ids,
        )


@dataclass
class TrainOutput:
    loss: torch.Tensor  # scalar: mean cross-entropy over the labelled tokens after the latents
    logits: torch.Tensor  # (N_labelled, V): logits of the labelled predictions, in batch order
    n_tokens: int
    selected: list[list[list[int]]]  # per sample, per latent step: image-token offsets in insertion order


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # (B, N) generated ids, pad after a sample's end
    num_generated: list[int]  # per sample, tokens generated (eos included): the autoregressive steps
    selected: list[list[list[int]]]  # per sample, per latent step: image-token offsets (0 = first image token)
    first_logits: torch.Tensor  # (B, V) logits of the first generated token (after all latent steps)
    states: list[torch.Tensor] = field(default_factory=list)  # per latent step t: (B, D) raw h_t (before scaling)
    # with generate(attention=True): the (B, 4) vision/text ratio and focus (``attention_measures``) of the query row
    # whose state latent step t feeds back, per latent step; and of each generated token's row, per decoded token
    latent_attention: list[torch.Tensor] = field(default_factory=list)
    decode_attention: list[torch.Tensor] = field(default_factory=list)


@dataclass
class _Layout:
    """Where things are in a batch: latent slots start at ``p``; sample b has ``n[b]`` of them."""

    p: int
    n: list[int]
    image_pos: list[torch.Tensor]  # per sample, sorted positions of its image tokens (all < p)
    rest_ids: torch.Tensor  # (B, R) ids after each sample's latents, left-aligned
    rest_mask: torch.Tensor  # (B, R)
    rest_labels: torch.Tensor | None  # (B, R)

    @property
    def n_max(self) -> int:
        return max(self.n, default=0)


class _Sequence:
    """The growing sequence of one batch: attention mask, positions, KV cache (or the full history)."""

    def __init__(self, backbone: Backbone, use_cache: bool, max_len: int | None = None):
        self.backbone = backbone
        self.use_cache = use_cache
        self.max_len = max_len  # a static cache of this many positions, decoded by the compiled step
        self.cache = backbone.new_cache(max_len) if use_cache else None
        self.mask: torch.Tensor | None = None  # (B, L) over everything so far
        self.vision: torch.Tensor | None = None  # (B, L) bool: which keys are image embeddings (attention analysis)
        self.next_pos: torch.Tensor | None = None  # (B,) position of the next real token
        self.history: list[tuple[torch.Tensor, torch.Tensor]] = []  # (embeds, positions) when not caching
        self.last_hidden: torch.Tensor | None = None  # (B, D) at each sample's last real position

    def positions_for(self, chunk_mask: torch.Tensor) -> torch.Tensor:
        """(1, B, t) next 1-D positions for a chunk; masked slots get a harmless copy of the last one."""
        offsets = chunk_mask.long().cumsum(-1) - 1
        return (self.next_pos[:, None] + offsets).clamp(min=0)[None]

    def forward(
        self, embeds: torch.Tensor, chunk_mask: torch.Tensor, positions: torch.Tensor | None = None, record=False,
        vision: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Append a chunk and run it. Returns its (B, t, D) hidden states and, if ``record``, the (B, L) mean
        attention of the chunk's last row over all keys so far. ``vision``: (B, t) bool, the chunk's image
        embeddings (default none)."""
        chunk_mask = chunk_mask.long()
        if positions is None and not record and chunk_mask.shape[1] == 1 and self.use_cache and self.next_pos is not None:
            return self._decode_step(embeds, chunk_mask), None
        flags = vision.bool() if vision is not None else torch.zeros_like(chunk_mask, dtype=torch.bool)
        self.vision = flags if self.vision is None else torch.cat([self.vision, flags], 1)
        if positions is None:
            positions = self.positions_for(chunk_mask)
        self.mask = chunk_mask if self.mask is None else torch.cat([self.mask, chunk_mask], 1)
        if self.use_cache:
            run_embeds, run_pos = embeds, positions
        else:
            self.history.append((embeds, positions))
            run_embeds = torch.cat([e for e, _ in self.history], 1)
            n_rows = max(p.shape[0] for _, p in self.history)  # 3 once an M-RoPE prompt is in the history
            run_pos = torch.cat([p.expand(n_rows, -1, -1) for _, p in self.history], -1)
        mask = self._chunk_mask(embeds.shape[1]) if self.use_cache else self._model_mask()
        # the capture computes the last row in every layer only while a recorder is active
        with record_last_row() if record else nullcontext() as rows:
            hidden, self.cache = self.backbone.run(run_embeds, run_pos, mask, self.cache)
        scores = mean_last_row(rows)[:, :self.mask.shape[1]] if record else None  # a static cache: its filled part
        hidden = hidden[:, -embeds.shape[1]:]
        # bookkeeping: next positions, and the hidden state at each sample's last real token
        real = chunk_mask.bool()
        has_real = real.any(1)
        if has_real.any():
            last_idx = (torch.arange(real.shape[1], device=real.device) * real).argmax(1)  # (B,)
            picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_idx]
            self.last_hidden = picked if self.last_hidden is None else torch.where(
                has_real[:, None], picked, self.last_hidden
            )
            top = positions.amax(0).masked_fill(~real, -1).amax(1) + 1  # (B,)
            self.next_pos = torch.where(has_real, top, self.next_pos) if self.next_pos is not None else top
        return hidden, scores

    def fork(self) -> "_Sequence":
        """An independent copy to continue from: later passes extend the copy's KV cache (or, on a static cache,
        write into it) and leave this one as it is."""
        twin = copy.copy(self)
        twin.cache = copy.deepcopy(self.cache)
        twin.history = list(self.history)
        return twin

    def _model_mask(self) -> torch.Tensor:
        """The attention mask the model gets: the sequence's, or on a static cache its full (B, max_len) shape."""
        if self.max_len is None:
            return self.mask
        if self.mask.shape[1] > self.max_len:
            raise ValueError(f"the static KV cache holds {self.max_len} positions, the sequence needs {self.mask.shape[1]}")
        return F.pad(self.mask, (0, self.max_len - self.mask.shape[1]))

    def _chunk_mask(self, t: int) -> torch.Tensor:
        """The mask for a chunk of ``t`` positions appended to a cached prefix: as ``_model_mask``, but once there is
        a prefix and t > 1, already in the (B, 1, t, L) boolean form that transformers would build from it (key
        j visible to chunk row i iff j is real and j <= L_now - t + i), which the model takes as it is. Built
        here in a few ops instead of transformers' general mask builder on every latent pass (the same values)."""
        mask = self._model_mask()
        now = self.mask.shape[1]
        if t == 1 or now == t:  # a decode step, or the prefill: transformers' fast paths (no mask or is_causal)
            return mask
        keys = torch.arange(mask.shape[1], device=mask.device)  # (L,)
        rows = torch.arange(now - t, now, device=mask.device)  # (t,) absolute index of each chunk row
        causal = keys[None, :] <= rows[:, None]  # (t, L)
        return mask.bool()[:, None, None, :] & causal[None, None]

    def _decode_step(self, embeds: torch.Tensor, chunk_mask: torch.Tensor) -> torch.Tensor:
        """The common one-token case of ``forward`` without the general bookkeeping (same results)."""
        positions = self.next_pos[None, :, None]  # (1, B, 1)
        self.mask = torch.cat([self.mask, chunk_mask], 1)
        self.vision = torch.cat([self.vision, torch.zeros_like(chunk_mask, dtype=torch.bool)], 1)
        run = self.backbone.run if self.max_len is None else self.backbone.compiled_run()
        hidden, self.cache = run(embeds, positions, self._model_mask(), self.cache)
        real = chunk_mask[:, 0].bool()
        self.last_hidden = torch.where(real[:, None], hidden[:, 0], self.last_hidden)
        self.next_pos = self.next_pos + real.long()
        return hidden


@dataclass
class Prefix:
    """A batch's prompt, run once (``LatentEngine.prefill``). ``generate(batch, prefix=...)`` continues a copy of
    it instead of running the prompt again, so that several runs of one batch (the analysis' interventions) share
    one vision tower and prompt pass: the same outputs as a ``generate`` that runs its own prompt."""

    input_ids: torch.Tensor  # the batch it belongs to
    prompt_options: tuple  # the engine options that shape a prompt pass (``LatentEngine._prompt_options``)
    max_len: int | None  # the static cache's size (decode="compiled"), which depends on the decoding budget
    seq: _Sequence
    embeds: torch.Tensor
    scores: torch.Tensor | None  # the prompt's last-row attention, when the first latent step needs it

    def resume(self, batch: LatentBatch, prompt_options: tuple, max_len: int | None, needs_scores: bool):
        """(a copy of the sequence, the embeddings, the scores) for a run of ``batch``. Raises ValueError for a
        prefix of another batch, engine options, decoding budget or attention setting."""
        if self.input_ids.shape != batch.input_ids.shape or not torch.equal(self.input_ids, batch.input_ids):
            raise ValueError("the prefix was made from another batch (prefill the batch that generate gets)")
        if self.prompt_options != prompt_options:
            raise ValueError(f"the prefix was made with (positions, use_cache, decode) = {self.prompt_options}, this "
                             f"engine runs {prompt_options}")
        if self.max_len != max_len:
            raise ValueError(f"the prefix's static cache holds {self.max_len} positions, this run needs {max_len} "
                             "(prefill with the same max_new_tokens)")
        if needs_scores and self.scores is None:
            raise ValueError("the prefix kept no attention row (prefill with attention=True)")
        return self.seq.fork(), self.embeds, self.scores


class LatentEngine:
    """IVT-LR over a backbone: ``forward`` (training loss) and ``generate`` (batched greedy decoding).

    Args:
        backbone: the model adapter (its attention is switched to the last-row capture backend).
        config: the latent options.
    """

    def __init__(self, backbone: Backbone, config: LatentConfig | None = None):
        self.backbone = backbone
        self.config = config or LatentConfig()
        if self.config.positions == "mrope" and not backbone.supports_mrope:
            raise ValueError(f"positions='mrope' is not available for backbone '{backbone.name}'")
        backbone.configure_attention()
        backbone.configure_vision()

    # ------------------------------------------------------------------------------------------ layout
    def _check_positions(self, batch: LatentBatch, max_new_tokens: int) -> None:
        """Refuse a sample whose prompt, latent steps (K + 1 positions each) and answer budget exceed the model's
        positions: the model never saw such positions, and its answer would be silently wrong."""
        limit = self.backbone.max_positions
        if limit is None:
            return
        n = (batch.input_ids == self.backbone.tokens.latent).sum(1)
        need = batch.attention_mask.sum(1) + n * self.config.k_effective + max_new_tokens
        over = (need > limit).nonzero()[:, 0].tolist()
        if over:
            b = over[0]
            raise ValueError(f"{batch.name(b)}: {int(batch.attention_mask[b].sum() - n[b])} prompt positions + "
                             f"{int(n[b])} latent steps x (K={self.config.k_effective} + 1) + {max_new_tokens} new "
                             f"tokens = {int(need[b])} positions, but the model has {limit} "
                             f"({len(over)} of {len(n)} question(s) in the batch are too long)")

    def _layout(self, batch: LatentBatch) -> _Layout:
        ids, mask = batch.input_ids, batch.attention_mask
        B, T = ids.shape
        latent = ids == self.backbone.tokens.latent
        n = latent.sum(1).tolist()
        if max(n) > 0:
            p = int(latent[[b for b in range(B) if n[b]][0]].nonzero()[0])
            for b in range(B):
                if n[b] and not bool(latent[b, p:p + n[b]].all()):
                    raise ValueError(
                        f"{batch.name(b)}: its {n[b]} <|latent|> slots must be contiguous and start at index {p} like "
                        "the rest of the batch (left-pad so that every sample's first latent slot aligns)"
                    )
        elif batch.labels is not None and bool((batch.labels != -100).any()):
            p = int((batch.labels != -100).long().argmax(1)[(batch.labels != -100).any(1)].min())
        else:
            p = T
        image = self.backbone.image_mask(ids) & mask.bool()
        image_pos = [image[b].nonzero()[:, 0] for b in range(B)]
        k = self.config.k_effective
        for b in range(B):
            if n[b] and k:
                if image_pos[b].numel() and int(image_pos[b][-1]) >= p:
                    raise ValueError(f"{batch.name(b)}: image tokens after the first latent slot are not supported")
                if k * n[b] > image_pos[b].numel():
                    raise ValueError(
                        f"{batch.name(b)}: K x n = {k} x {n[b]} = {k * n[b]} image tokens to select, but the image "
                        f"has only {image_pos[b].numel()} (lower K or the number of latent steps, or use a larger "
                        "image): a patch is never selected twice"
                    )
        start = torch.tensor([p + nb for nb in n], device=ids.device)
        R = T - int(start.min())
        idx = start[:, None] + torch.arange(R, device=ids.device)[None]  # (B, R)
        inside = idx < T
        idx = idx.clamp(max=T - 1)
        rest_ids = ids.gather(1, idx)
        rest_mask = mask.gather(1, idx) * inside
        rest_labels = None
        if batch.labels is not None:
            before = torch.arange(T, device=ids.device)[None] < start[:, None]
            if bool(((batch.labels != -100) & before).any()):
                raise ValueError("labels must be -100 over the prompt and the latent slots (loss only after them)")
            rest_labels = batch.labels.gather(1, idx).masked_fill(~(inside & rest_mask.bool()), -100)
        return _Layout(p, n, image_pos, rest_ids, rest_mask, rest_labels)

    # ------------------------------------------------------------------------------------- latent passes
    def _training(self) -> bool:
        """A training forward: the model in train mode with gradients on (not a validation inside a training run)."""
        return self.backbone.hf.training and torch.is_grad_enabled()

    def _caching(self) -> bool:
        """The KV cache, unless layer checkpointing runs in training: it drops the cache, so the engine recomputes
        the prefix per pass instead (the same loss and gradients; tests/test_engine.py)."""
        return self.config.use_cache and not (self._training()
                                              and getattr(self.backbone.hf, "is_activation_checkpointing", False))

    def _prefill(self, batch: LatentBatch, layout: _Layout, attention: bool = False, max_len: int | None = None
                 ) -> tuple[_Sequence, torch.Tensor, torch.Tensor | None]:
        """Embed the batch, run the prompt [0, p). Returns the sequence (on a static cache of ``max_len``
        positions if given), the (B, T, D) input embeddings and the last row's attention (when the first latent
        step needs it, or ``attention`` asks for it)."""
        embeds = self.backbone.embed_inputs(batch.input_ids, batch.vision)
        caching = self._caching()
        seq = _Sequence(self.backbone, caching, max_len if caching else None)
        p = layout.p
        if self.config.positions == "mrope":
            positions = self.backbone.mrope_positions(batch.input_ids, batch.attention_mask, batch.vision)
        else:
            positions = (batch.attention_mask.long().cumsum(-1) - 1).clamp(min=0)[None]
        record = layout.n_max > 0 and (self._needs_row() or attention)
        if p == 0:
            raise ValueError("the batch has no prompt before the first latent slot")
        vision = self.backbone.image_mask(batch.input_ids[:, :p]) & batch.attention_mask[:, :p].bool()
        _, scores = seq.forward(embeds[:, :p], batch.attention_mask[:, :p], positions[..., :p], record=record,
                                vision=vision)
        return seq, embeds, scores

    def _needs_row(self) -> bool:
        """Whether the selection reads the attention row of the position whose state is fed back (the prompt's
        last row, then each latent chunk's): latent vision with ``selection="behind"``."""
        return self.config.k_effective > 0 and self.config.selection == "behind"

    def _select(self, scores: torch.Tensor, layout: _Layout, picked: list[torch.Tensor], active: list[bool],
                vision: str | None = None, generator: torch.Generator | None = None):
        """Top-K not-yet-picked image tokens per active sample. Returns (B, K) offsets into ``image_pos``.

        ``vision`` (an ``Intervention``): "random" ranks by uniform noise instead of the attention, "lowest" by
        the negated attention."""
        k = self.config.k_effective
        B = scores.shape[0]
        out = torch.zeros(B, k, dtype=torch.long, device=scores.device)
        for b in range(B):
            if not active[b]:
                continue
            row = scores[b, layout.image_pos[b]].float()  # (N_b,)
            if vision == "random":
                row = torch.rand(row.shape, generator=generator, device=row.device)
            elif vision == "lowest":
                row = -row
            row = row.masked_fill(picked[b], float("-inf"))
            if self.config.patch_order == "reference":
                # the authors' exact order: unsorted topk on the CPU over the image-span slice
                idx = row.cpu().topk(k, sorted=False).indices.to(row.device)
            else:
                idx = row.topk(k, sorted=True).indices
                if self.config.patch_order == "raster":
                    idx = idx.sort().values
            picked[b][idx] = True
            out[b] = idx
        return out

    def _feedback(self, h: torch.Tensor, t: int, intervention: Intervention | None) -> torch.Tensor:
        """The (B, D) state latent step t feeds back: h_t, detached, rescaled and intervened on as configured."""
        B = h.shape[0]
        if not self.config.latent_text:
            return self.backbone.embed_tokens(
                torch.full((B,), self.backbone.tokens.latent, device=h.device, dtype=torch.long)
            )
        if self.config.latent_grad == "detach":
            h = h.detach()
        if self.config.feedback_norm == "embedding":
            with torch.no_grad():
                target = self.backbone.embedding.weight.float().norm(dim=-1).mean()  # a constant of the model
            h = h * (target / h.float().norm(dim=-1, keepdim=True).clamp(min=1e-6)).to(h.dtype)
        if self.config.state_dropout and self._training():
            drop = torch.rand(B, 1, device=h.device) < self.config.state_dropout
            h = h.masked_fill(drop, 0.0)
        if intervention is not None and intervention.state and intervention.applies(t):
            if intervention.state == "zero":
                h = torch.zeros_like(h)
            elif intervention.state == "shuffle":
                if B < 2:
                    raise ValueError("the shuffle intervention needs a batch of at least 2 questions")
                h = h.roll(1, dims=0)  # every question gets another question's state
            else:
                noise = torch.randn(h.shape, generator=intervention.generator(h.device, t), device=h.device)
                h = (noise * (h.float().norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True))).to(h.dtype)
        return h

    def _latent_chunk(self, seq, embeds, layout, offsets, t, intervention=None, state=True, patches=True
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The embeddings [z_t, h_t] (or the configured order) appended by latent step t, their mask, and which of
        them are image embeddings. ``selection="ahead"`` appends them in two passes: h_t alone (``patches=False``),
        then z_t alone (``state=False``)."""
        B, D = embeds.shape[0], embeds.shape[-1]
        parts, flags = [], []
        if state:
            h = self._feedback(seq.last_hidden, t, intervention)  # (B, D) the fed-back hidden state
            parts.append(h[:, None].to(embeds.dtype))  # (B, 1, D)
            flags.append(False)
        k = self.config.k_effective
        if patches and k:
            pos = torch.stack([layout.image_pos[b][offsets[b]] for b in range(B)])  # (B, K)
            z = embeds.gather(1, pos[..., None].expand(B, k, D))  # (B, K, D) selected image embeddings
            if intervention is not None and intervention.vision == "zero" and intervention.applies(t):
                z = torch.zeros_like(z)  # the slots stay, their content goes
            if self.config.order == "vision_first":
                parts, flags = [z, *parts], [True] * k + flags
            else:
                parts, flags = [*parts, z], flags + [True] * k
        chunk = torch.cat(parts, 1)
        active = torch.tensor([nb >= t for nb in layout.n], device=embeds.device)
        vision = torch.tensor(flags, device=embeds.device)[None].expand(B, -1)
        return chunk, active[:, None].expand(B, chunk.shape[1]), vision

    def _static_len(self, layout: _Layout, new_tokens: int | None) -> int | None:
        """The static cache's size under ``decode="compiled"`` (prompt, latent passes, rest and the decoding
        budget ``new_tokens``); None for a growing cache."""
        if self.config.decode != "compiled" or new_tokens is None:
            return None
        return layout.p + layout.n_max * (self.config.k_effective + 1) + layout.rest_ids.shape[1] + new_tokens

    def _run_latents(self, batch: LatentBatch, intervention: Intervention | None = None,
                     attention: list[torch.Tensor] | None = None, new_tokens: int | None = None,
                     prefix: Prefix | None = None):
        """Prefill (or continue ``prefix``) and all latent steps but the last chunk, which is returned unrun (it is
        run together with the rest). Returns (seq, layout, pending (chunk, mask, vision flags) or None, selections,
        raw fed-back states). ``attention``: a list that receives each latent step's (B, 2) ``attention_measures``.
        ``new_tokens``: the decoding budget that follows (sizes the static cache of ``decode="compiled"``)."""
        layout = self._layout(batch)
        analyse = attention is not None
        max_len = self._static_len(layout, new_tokens)
        if prefix is None:
            seq, embeds, scores = self._prefill(batch, layout, analyse, max_len)
        else:
            needs_scores = layout.n_max > 0 and (self._needs_row() or analyse)
            seq, embeds, scores = prefix.resume(batch, self._prompt_options(), max_len, needs_scores)
        B = batch.input_ids.shape[0]
        picked = [torch.zeros(len(pos), dtype=torch.bool, device=embeds.device) for pos in layout.image_pos]
        selected: list[list[list[int]]] = [[] for _ in range(B)]
        states: list[torch.Tensor] = []
        pending = None
        ahead = self.config.selection == "ahead" and self.config.k_effective > 0
        for t in range(1, layout.n_max + 1):
            active = [nb >= t for nb in layout.n]
            if analyse:
                attention.append(attention_measures(scores, seq.vision, seq.mask))
            states.append(seq.last_hidden)
            rows = scores  # behind: the row of the position whose state is h_t picks z_t
            if ahead:  # h_t is appended first, and its own slot's row picks z_t
                chunk, chunk_mask, vision = self._latent_chunk(seq, embeds, layout, None, t, intervention,
                                                               patches=False)
                _, rows = seq.forward(chunk, chunk_mask, record=True, vision=vision)
            offsets = None
            if self.config.k_effective:
                swap = intervention.vision if intervention is not None and intervention.applies(t) else None
                generator = intervention.generator(embeds.device, t) if swap == "random" else None
                offsets = self._select(rows, layout, picked, active, swap, generator)
                for b in range(B):
                    if active[b]:
                        selected[b].append(offsets[b].tolist())
            chunk, chunk_mask, vision = self._latent_chunk(seq, embeds, layout, offsets, t, intervention,
                                                           state=not ahead)
            if t == layout.n_max:
                pending = (chunk, chunk_mask, vision)
            else:
                _, scores = seq.forward(chunk, chunk_mask, record=self._needs_row() or analyse, vision=vision)
        return seq, layout, pending, selected, states

    def _run_rest(self, seq: _Sequence, layout: _Layout, pending):
        """Run [pending latent chunk, rest] in one forward. Returns the (B, R, D) hidden states that predict each
        rest token (the state one real position before it)."""
        rest = self.backbone.embed_tokens(layout.rest_ids)
        rest_vision = torch.zeros_like(layout.rest_mask, dtype=torch.bool)
        if pending is None:
            parts, masks, flags = [rest], [layout.rest_mask], [rest_vision]
        else:
            pending, pending_mask, pending_vision = pending
            parts, masks, flags = [pending, rest], [pending_mask.long(), layout.rest_mask], [pending_vision, rest_vision]
        if sum(x.shape[1] for x in parts) == 0:
            return rest[:, :0]
        chunk, mask = torch.cat(parts, 1), torch.cat(masks, 1)
        before = seq.last_hidden
        hidden, _ = seq.forward(chunk, mask, vision=torch.cat(flags, 1))
        P = 0 if pending is None else pending.shape[1]
        # the state before rest token 0: the pending chunk's last row if the sample had it, else the earlier state
        if pending is None:
            first = before
        else:
            first = torch.where(pending_mask[:, -1:].bool(), hidden[:, P - 1], before)
        return torch.cat([first[:, None], hidden[:, P:-1]], 1) if layout.rest_ids.shape[1] else hidden[:, :0]

    # ------------------------------------------------------------------------------------------- public
    def forward(self, batch: LatentBatch) -> TrainOutput:
        """Training forward: the cross-entropy of the tokens after the latent slots, teacher-forced.

        Raises ValueError for a batch whose latent slots do not align, whose labels reach into the prompt, or
        that asks for more image tokens (K x n) than a sample's image has.
        """
        if batch.labels is None:
            raise ValueError("forward needs labels (use generate for inference)")
        seq, layout, pending, selected, _ = self._run_latents(batch)
        pred = self._run_rest(seq, layout, pending)  # (B, R, D)
        target = layout.rest_labels
        keep = target != -100
        logits = self.backbone.logits(pred[keep])  # (N, V): only the supervised rows, never the latent passes
        n_tokens = int(keep.sum())
        loss = F.cross_entropy(logits.float(), target[keep]) if n_tokens else logits.sum() * 0.0
        return TrainOutput(loss=loss, logits=logits, n_tokens=n_tokens, selected=selected)

    @torch.no_grad()
    def prefill(self, batch: LatentBatch, max_new_tokens: int = 16, attention: bool = False) -> Prefix:
        """Run ``batch``'s prompt once, for several ``generate(batch, max_new_tokens, prefix=...)`` calls
        (``attention``: for calls with ``attention=True``)."""
        layout = self._layout(batch)
        max_len = self._static_len(layout, max_new_tokens)
        seq, embeds, scores = self._prefill(batch, layout, attention, max_len)
        return Prefix(batch.input_ids, self._prompt_options(), max_len, seq, embeds, scores)

    def _prompt_options(self) -> tuple:
        """The options that shape a prompt pass and what follows it on its sequence."""
        return self.config.positions, self.config.use_cache, self.config.decode

    @torch.no_grad()
    def generate(self, batch: LatentBatch, max_new_tokens: int = 16, intervention: Intervention | None = None,
                 attention: bool = False, prefix: Prefix | None = None) -> GenerationOutput:
        """Latent steps, then greedy decoding with a per-sample eos stop.

        The prompt (and its latent slots) must be left-padded so the first latent slot aligns; anything after
        the latent slots in the prompt (e.g. Chameleon's separator) is teacher-forced before decoding.
        ``intervention`` (analysis) replaces fed-back states or selections at chosen latent steps.
        ``attention`` (analysis) also returns the paper's attention measures per latent step and per decoded token
        (the same tokens: the rows are read from the capture the selection uses). ``prefix`` (``prefill``): start
        from that run of the prompt instead of running it again.
        """
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        self._check_positions(batch, max_new_tokens)
        latent_attention: list[torch.Tensor] = []
        decode_attention: list[torch.Tensor] = []
        seq, layout, pending, selected, states = self._run_latents(batch, intervention,
                                                                   latent_attention if attention else None,
                                                                   new_tokens=max_new_tokens, prefix=prefix)
        self._run_rest(seq, layout, pending)
        tokens = self.backbone.tokens
        B = batch.input_ids.shape[0]
        device = batch.input_ids.device
        out = torch.full((B, max_new_tokens), tokens.pad, dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        lengths = torch.zeros(B, dtype=torch.long, device=device)
        first_logits = logits = self.backbone.logits(seq.last_hidden)  # (B, V)
        for step in range(max_new_tokens):
            nxt = logits.argmax(-1)  # (B,) greedy
            out[:, step] = torch.where(done, tokens.pad, nxt)
            lengths += (~done).long()
            done = done | (nxt == tokens.eos)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            hidden, row = seq.forward(self.backbone.embed_tokens(nxt[:, None]), torch.ones(B, 1, device=device),
                                      record=attention)
            if attention:
                decode_attention.append(attention_measures(row, seq.vision, seq.mask))
            logits = self.backbone.logits(hidden[:, -1])
        n = int(lengths.max())
        return GenerationOutput(out[:, :n], lengths.tolist(), selected, first_logits, states, latent_attention,
                                decode_attention)
