"""Typed configuration of a training run: one dataclass per concern, loaded from YAML, overridden by flags.

``TrainConfig`` = model + data + curriculum + optim + run + latent (the engine's ``LatentConfig``). Every field
is a CLI flag ``--section.field`` (``ivtlr.cliargs``), and the resolved config is saved beside every run and
checkpoint as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from .backbones import family
from .engine import LatentConfig


@dataclass
class ModelConfig:
    backbone: str = "qwen2-vl"
    """Model family, a name of the ivtlr.backbones registry: qwen2-vl, qwen2.5-vl or chameleon."""
    name_or_path: str | None = None
    """Hub id or local folder of a pretrained model (e.g. Qwen/Qwen2-VL-7B-Instruct). None: a tiny model built
    from scratch (the CPU demo and tests), with a tokenizer trained on the task's text."""
    tiny_hidden: int = 128
    """Tiny model: language model width."""
    tiny_layers: int = 4
    """Tiny model: language model depth."""
    tiny_heads: int = 4
    """Tiny model: attention heads (the key/value heads are half of them)."""
    tiny_vision_depth: int = 2
    """Tiny model: vision transformer depth."""
    tiny_vocab: int = 400
    """Tiny model: BPE vocabulary size of the task tokenizer."""
    tiny_tie_embeddings: bool = False
    """Tiny model: the output head shares the input embeddings (then a fed-back state that predicts a word points
    along that word's input embedding)."""
    lora: bool = True
    """LoRA on the language model's q/k/v/o/gate/up/down projections (pretrained models; tiny models train fully)."""
    lora_r: int = 64
    """LoRA rank (authors: 64)."""
    lora_alpha: float = 16
    """LoRA alpha (authors: 16)."""
    lora_dropout: float = 0.05
    """LoRA dropout (authors: 0.05)."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """auto: bfloat16 on a GPU that supports it, else float32."""
    image_size: int | None = None
    """Resize images to this square side before the processor (authors: 280 for Qwen2-VL). None: keep."""
    init_latent_from: str = "<<"
    """Pretrained models: the new latent tokens' embedding and lm_head rows start as copies of this token's."""
    init_from: str | None = None
    """An ivtlr checkpoint folder to start from (its weights and tokenizer; the optimizer starts fresh), e.g. the
    latent stages (curriculum.first_stage 1) fine-tuned from a shared stage-0 chain-of-thought checkpoint."""
    tie_on_init: bool = False
    """With init_from: tie the loaded model's output head to its input embeddings, which keep their values
    (``ivtlr.models.tie_embeddings``), e.g. latent stages trained tied from a stage 0 trained untied."""

    def __post_init__(self):
        family(self.backbone)  # raises ValueError naming the registered families
        for name in ("tiny_hidden", "tiny_layers", "tiny_heads", "lora_r", "tiny_vocab"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1")
        if self.tiny_hidden % self.tiny_heads:
            raise ValueError("model.tiny_hidden must be a multiple of model.tiny_heads")
        if self.tie_on_init and self.init_from is None:
            raise ValueError("model.tie_on_init ties the checkpoint of model.init_from: set model.init_from")


@dataclass
class DataConfig:
    task: Literal["synth", "m3cot", "scienceqa"] = "synth"
    """Benchmark (its task object owns prompts, steps, answers and scoring)."""
    source: str | None = None
    """Dataset: hub id or local path (synth: the folder written by `ivtlr data synth`)."""
    train_split: str = "train"
    """Split to train on."""
    val_split: str = "test"
    """Split for validation at each stage end."""
    max_train: int | None = None
    """Use only the first N training examples."""
    val_size: int = 100
    """Validation questions at each stage end (0: none)."""
    prompt_style: Literal["aligned", "reference"] = "aligned"
    """aligned: identical prompts in training and inference; reference: the authors' two prompts."""
    on_error: Literal["raise", "skip"] = "skip"
    """Bad records: stop with an error naming the record, or skip and count them."""
    max_length: int = 2048
    """Longest training sequence in tokens; longer ones drop trailing explicit steps (never the answer)."""


@dataclass
class CurriculumConfig:
    epochs_per_stage: int = 4
    """Epochs per curriculum stage (authors: 4)."""
    cot_epochs: int | None = None
    """Epochs of stage 0 (chain-of-thought) when the curriculum starts there; None: epochs_per_stage. Coconut
    trains its CoT stage separately and longer; on a CPU budget the latent stages need fewer epochs."""
    stage_epochs: list[int] | None = None
    """Epochs of each latent stage, from the first latent stage trained to max_latent_stage (e.g. [1, 2, 1]);
    None: epochs_per_stage each."""
    max_latent_stage: int = 3
    """Last stage; stage s replaces the first s steps by s latent slots (authors: 3)."""
    pad_latent_to_max: bool = False
    """Samples with fewer steps than the stage still get `stage` latent slots."""
    extra_epochs: int = 0
    """Epochs after the last stage with every step latent."""
    first_stage: int = 0
    """Start the curriculum at this stage (0: with chain-of-thought)."""
    stage_mix_prob: float = 0.0
    """Probability of building a sample at a random earlier stage (Coconut's uniform_prob)."""
    stage_ahead_prob: float = 0.0
    """Probability that a sample of a latent stage before the last is built at the last stage instead (checked
    before stage_mix_prob), so that the all-latent answer is trained from stage 1 on (not in the authors' code)."""
    reset_optimizer: bool = True
    """Fresh optimizer state at each stage start (Coconut's default)."""
    no_cot: bool = False
    """Baseline: train to answer directly (no rationale, no latents), for `epochs_per_stage` epochs."""
    stop_at: float | None = None
    """End a stage early once a validation (every run.val_every steps, on data.val_split) after the stage's first
    epochs (stop_after) reaches this accuracy (0-1); its epochs are then a maximum. A stage always trains its
    first epoch: stages cut short within it left the next stage unable to learn (docs/latent-reasoning.md).
    None: every stage runs all its epochs. Validate on a split that is not the test split (data.val_split)."""
    stop_after: int = 1
    """stop_at ends a stage only once this many of its epochs are done (default 1: never within its first
    epoch). The demo's stage 0 uses 4, its former fixed budget: a chain-of-thought stage that validates at 100%
    early is left its usual epochs, and only a slow one gets more (up to its epochs)."""
    stop_patience: int = 1
    """stop_at ends a stage only at the N-th validation in a row at or above it (default 1: the first). A stage
    that has just jumped to stop_at has not consolidated: seed 4 of the demo stopped its last stage at its first
    validation at 100% and scored 99.3% on the test split against 100% for the stage before (measured,
    docs/latent-reasoning.md)."""
    keep_best: bool = False
    """End each stage with the weights of its best validation (run.val_every) instead of its last step's."""
    overtime_epochs: int = 0
    """Extra epochs, at most this many in the whole run, for latent stages whose stop rule (stop_at,
    stop_patience) has not held by the end of their planned epochs: such a stage trains one more epoch at a time,
    each with its own data order, until the rule holds or the run has used them all. Stages that stop within their
    epochs train exactly as without it; the bound keeps the run's length bounded. Seed 3 of the demo validated
    87-88% at the end of stage 2's two epochs and reached 100% in a third (docs/latent-reasoning.md)."""
    cot_extra_epochs: int = 0
    """In a run of stage 0 alone (max_latent_stage 0, as the demo trains it): epochs that stage 0 may train past
    its cot_epochs, numbered on as a longer stage 0 would (the same data orders), while its stop rule has not
    held and its best validation is still below cot_extra_below: a chain-of-thought that has not learnt to read
    the image, which no latent stage can mend. It ends at the end of the first epoch by which its best validation
    reaches cot_extra_below (or the rule holds). A stage 0 at or above cot_extra_below by the end of its
    cot_epochs ends there, exactly as without them. Measured on the demo: the step at which stage 0 begins to
    read depends on the seed, up to 1,570 of its 1,878 planned steps on seeds 18-28, and seed 29 validated 56.0%
    at best by then (docs/latent-reasoning.md)."""
    cot_extra_below: float = 0.0
    """See cot_extra_epochs (0-1; the demo: 0.75, its chain-of-thought target of 70% and a margin for the
    validation split: seed 15's stage 0 validated 83.0% at best and scored 76.0% on the test split)."""
    overtime_within: float = 0.05
    """A stage gets an overtime epoch only while its last validation is within this much (0-1) of its best one:
    a stage on a plateau may still jump, one that has fallen from its best ends with it (keep_best). Seed 8 of
    the demo: stage 1 fell from 97.8% to 60.8% in its two epochs and to 50.2% in two more, which spent the
    run's overtime; ended at once with its best weights, the later stages reach 100% (docs/latent-reasoning.md)."""

    def __post_init__(self):
        if self.stop_at is not None and not 0.0 < self.stop_at <= 1.0:
            raise ValueError("curriculum.stop_at must be in (0, 1] (or null)")
        if self.stop_patience < 1:
            raise ValueError(f"curriculum.stop_patience must be >= 1 (validations in a row), got {self.stop_patience}")
        if self.stop_after < 1:
            raise ValueError(f"curriculum.stop_after must be >= 1 (epochs of a stage), got {self.stop_after}")
        if self.epochs_per_stage < 1 or self.max_latent_stage < 0 or self.extra_epochs < 0:
            raise ValueError("curriculum: epochs_per_stage >= 1, max_latent_stage >= 0, extra_epochs >= 0")
        if self.overtime_epochs < 0:
            raise ValueError(f"curriculum.overtime_epochs must be >= 0, got {self.overtime_epochs}")
        if not 0.0 <= self.overtime_within <= 1.0:
            raise ValueError(f"curriculum.overtime_within must be in [0, 1], got {self.overtime_within}")
        if self.overtime_epochs and self.stop_at is None:
            raise ValueError("curriculum.overtime_epochs extends stages whose stop rule has not held: it needs "
                             "curriculum.stop_at")
        if self.cot_extra_epochs < 0 or not 0.0 <= self.cot_extra_below <= 1.0:
            raise ValueError("curriculum.cot_extra_epochs must be >= 0 and curriculum.cot_extra_below in [0, 1]")
        if self.cot_extra_epochs and self.stop_at is None:
            raise ValueError("curriculum.cot_extra_epochs extends a stage 0 that has not reached "
                             "curriculum.cot_extra_below on validation: it needs curriculum.stop_at")
        if self.cot_extra_epochs and (self.max_latent_stage or self.extra_epochs or self.no_cot):
            raise ValueError("curriculum.cot_extra_epochs is for a run of stage 0 alone (max_latent_stage 0), as "
                             "the demo trains it: in a run that goes on, they would renumber the later stages' "
                             "epochs, whose index orders their data, even where stage 0 ends in time")
        if self.cot_epochs is not None and self.cot_epochs < 1:
            raise ValueError("curriculum.cot_epochs must be >= 1 (or null)")
        if not 0 <= self.first_stage <= self.max_latent_stage:
            raise ValueError("curriculum.first_stage must be in 0..max_latent_stage")
        if not 0.0 <= self.stage_mix_prob <= 1.0 or not 0.0 <= self.stage_ahead_prob <= 1.0:
            raise ValueError("curriculum.stage_mix_prob and curriculum.stage_ahead_prob must be in [0, 1]")
        if self.stage_epochs is not None:
            self.stage_epochs = [int(e) for e in self.stage_epochs]
            n_latent = self.max_latent_stage - max(1, self.first_stage) + 1
            if len(self.stage_epochs) != n_latent or any(e < 1 for e in self.stage_epochs):
                raise ValueError(f"curriculum.stage_epochs needs {n_latent} positive epoch counts (stages "
                                 f"{max(1, self.first_stage)}..{self.max_latent_stage}), got {self.stage_epochs}")

    @property
    def stage0_planned(self) -> int:
        """Stage 0's planned epochs (0 when the curriculum starts later): cot_epochs, or epochs_per_stage."""
        if self.first_stage > 0:
            return 0
        return self.cot_epochs if self.cot_epochs is not None else self.epochs_per_stage

    @property
    def stage0_epochs(self) -> int:
        """Epochs stage 0 may span: its planned ones and cot_extra_epochs (0 when the curriculum starts later)."""
        return self.stage0_planned + (self.cot_extra_epochs if self.stage0_planned else 0)

    def is_extra(self, epoch: int) -> bool:
        """Whether ``epoch`` is one of stage 0's cot_extra_epochs (trained only when stage 0 is still below
        cot_extra_below)."""
        return self.stage0_planned <= epoch < self.stage0_epochs

    @property
    def latent_epochs(self) -> list[int]:
        """Epochs of each latent stage trained (first latent stage first)."""
        if self.stage_epochs is not None:
            return list(self.stage_epochs)
        return [self.epochs_per_stage] * max(0, self.max_latent_stage - max(1, self.first_stage) + 1)

    @property
    def total_epochs(self) -> int:
        if self.no_cot:
            return self.epochs_per_stage
        return self.stage0_epochs + sum(self.latent_epochs) + self.extra_epochs

    def stage(self, epoch: int) -> int:
        """The stage of an epoch (0-based); after the last stage, max_latent_stage."""
        if self.no_cot or epoch < self.stage0_epochs:
            return 0
        left = epoch - self.stage0_epochs
        for stage, epochs in enumerate(self.latent_epochs, start=max(1, self.first_stage)):
            if left < epochs:
                return stage
            left -= epochs
        return self.max_latent_stage

    def is_stage_start(self, epoch: int) -> bool:
        return epoch == 0 or self.stage(epoch) != self.stage(epoch - 1)

    def epochs_into_stage(self, epoch: int) -> int:
        """How many epochs of ``epoch``'s stage come before it (0 in the stage's first epoch)."""
        done = 0
        while not self.is_stage_start(epoch - done):
            done += 1
        return done

    def is_stage_end(self, epoch: int) -> bool:
        """Whether ``epoch`` is the last epoch of its stage (or of the run)."""
        return epoch + 1 >= self.total_epochs or self.stage(epoch + 1) != self.stage(epoch)

    def stage_end(self, epoch: int) -> int:
        """The last epoch of ``epoch``'s stage."""
        while not self.is_stage_end(epoch):
            epoch += 1
        return epoch


@dataclass
class OptimConfig:
    lr: float = 4e-5
    """Learning rate (authors: 4e-5, constant)."""
    latent_lr: float = 0.0
    """Learning rate of the latent stages (stage >= 1), whose optimizer starts anew at each stage (0: ``lr`` for
    every stage, as the authors). The CPU demo's recipe trains them at 3e-4 after stage 0 at 1e-3
    (docs/latent-reasoning.md)."""
    schedule: Literal["constant", "cosine"] = "constant"
    """constant (authors) or cosine decay over each stage, both after the warmup."""
    warmup_steps: int = 0
    """Linear warmup optimizer steps at the start of each schedule (authors: 0)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    batch_size: int = 2
    """Per-process batch size (authors: 2)."""
    grad_accum: int = 1
    """Gradient accumulation steps (authors: 8)."""
    grad_clip: float = 0.7
    """Max gradient norm (authors: 0.7; 0 disables)."""
    seed: int = 0
    """Seed of the model init, data order and stage mixing."""

    def __post_init__(self):
        if self.latent_lr < 0:
            raise ValueError(f"optim.latent_lr must be >= 0 (0: optim.lr), got {self.latent_lr}")
        if self.lr <= 0 or self.batch_size < 1 or self.grad_accum < 1 or self.grad_clip < 0:
            raise ValueError("optim: lr > 0, batch_size >= 1, grad_accum >= 1, grad_clip >= 0")


@dataclass
class RunConfig:
    out_dir: str = "runs/train"
    """Run folder: config.yaml, metrics.jsonl, TensorBoard logs, checkpoints/."""
    save_every: int = 0
    """Also checkpoint every N optimizer steps (0: only at stage ends)."""
    keep_last: int = 2
    """Checkpoints kept (oldest deleted first)."""
    log_every: int = 10
    """Progress-bar refresh and TensorBoard scalars every N steps."""
    resume: bool = False
    """Continue from the newest valid checkpoint in out_dir (exactly: same data order, RNG and optimizer state)."""
    overwrite: bool = False
    """Start afresh in an out_dir that already holds a run: its checkpoints, metrics and logs are deleted first.
    Without it (or resume) such a folder is refused, so a finished run is never replaced by accident."""
    gradient_checkpointing: bool = False
    """Layer checkpointing (drops the KV cache in training: the engine then recomputes the prefix per pass)."""
    val_every: int = 0
    """Also validate every N optimizer steps (0: only at stage ends); the validation rows of metrics.jsonl then
    trace when each rationale step is learnt (chain-of-thought stages: exact match per written step)."""
    val_max_new_tokens: int = 96
    """Generation budget for validation (chain-of-thought stages need the rationale's length)."""
    eval_batch_size: int = 16
    """Batch size of validation generation."""
    wandb: bool = False
    """Also log to Weights & Biases (when installed)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (smoke tests); the run can be resumed later."""
    progress: bool = True
    """Show a progress bar per stage."""

    def __post_init__(self):
        if self.eval_batch_size < 1 or self.val_max_new_tokens < 1 or self.val_every < 0:
            raise ValueError("run: eval_batch_size >= 1, val_max_new_tokens >= 1, val_every >= 0")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)

    SECTIONS = ("model", "data", "curriculum", "optim", "run", "latent")

    def __post_init__(self):
        self.check_sections()

    def check_sections(self) -> None:
        """Rules across sections (the trainer calls it again after command-line overrides replaced sections)."""
        cur = self.curriculum
        if (cur.stop_at is not None or cur.keep_best) and not (self.run.val_every and self.data.val_size):
            raise ValueError("curriculum.stop_at and curriculum.keep_best select by validation: they need "
                             "run.val_every > 0 and data.val_size > 0")
        if self.optim.latent_lr and not cur.reset_optimizer:
            raise ValueError("optim.latent_lr sets the rate of each latent stage's new optimizer: it needs "
                             "curriculum.reset_optimizer true")
        for key in ("overtime_epochs", "cot_extra_epochs"):
            if getattr(cur, key) and self.optim.schedule != "constant":
                raise ValueError(f"curriculum.{key} trains past a stage's planned steps, where the "
                                 f"{self.optim.schedule!r} schedule has ended: it needs optim.schedule constant")

    def to_dict(self) -> dict:
        return {s: dataclasses.asdict(getattr(self, s)) for s in self.SECTIONS}

    @classmethod
    def from_dict(cls, data: dict, source: str = "the config") -> "TrainConfig":
        """Build and validate a config; a ValueError names ``source``, the key, and the closest valid key."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of sections {list(cls.SECTIONS)}, got {type(data).__name__}")
        for section in data:
            if section not in cls.SECTIONS:
                raise ValueError(f"{source}: unknown section {section!r}{_did_you_mean(section, cls.SECTIONS)}")
        kinds = {f.name: f.default_factory for f in dataclasses.fields(cls)}
        parts = {}
        for section in cls.SECTIONS:
            values = data.get(section) or {}
            if not isinstance(values, dict):
                raise ValueError(f"{source}: section {section!r} must be a mapping of keys, got {values!r}")
            section_cls = type(kinds[section]())
            hints = typing.get_type_hints(section_cls)
            names = [f.name for f in dataclasses.fields(section_cls) if f.init]
            for key, value in values.items():
                if key not in names:
                    raise ValueError(f"{source}: unknown key {section}.{key}{_did_you_mean(key, names, section)}")
                check_type(f"{section}.{key}", hints[key], value, source)
            try:
                parts[section] = section_cls(**values)
            except ValueError as err:
                raise ValueError(f"{source}: {err}") from None
        return cls(**parts)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        try:
            data = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
        if data is None:
            raise ValueError(f"{path} is empty (a config needs at least one section, e.g. `data: {{task: synth}}`)")
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _did_you_mean(word: str, options, section: str | None = None) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    if not close:  # an abbreviation spelled out (lr <- learning_rate): the option's letters in order in the word
        close = [o for o in options if len(o) > 1 and _is_subsequence(o, word) and o[0] == word[0]][:1]
    if close:
        return f" (did you mean {section + '.' if section else ''}{close[0]}?)"
    return f" (valid: {', '.join(options)})"


def _is_subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(ch in it for ch in short)


def check_type(name: str, tp, value: Any, source: str = "the config") -> None:
    """Raise ValueError naming ``name`` if ``value`` (from YAML) does not fit the field's type ``tp``."""
    if not _fits(tp, value):
        raise ValueError(f"{source}: {name} must be {_describe(tp)}, got {value!r}")


def _fits(tp, value) -> bool:
    origin = get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return value in get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(a, value) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis] or [Any]
        return isinstance(value, (list, tuple)) and all(_fits(args[0], v) for v in value)
    return True


def _describe(tp) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, tuple):
        return f"a list of {_describe((get_args(tp) or (Any,))[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))
