"""``ivtlr train CONFIG.yaml [--section.key value ...]``: the progressive latent curriculum on accelerate.

Phases: ``setup`` (device, model, tokenizer, data), then per epoch ``train_epoch`` of ``train_step``s, with
``save`` at every stage end (and every N steps), ``validate`` at every stage end through the real generation
path, and ``resume`` from the newest checkpoint. One process on CPU or GPU, or several through
``torchrun``/``accelerate launch`` (DDP; FSDP and DeepSpeed configs in configs/). Only rank 0 prints and writes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .backbones import TokenIds, family_of
from .batching import collate
from .checkpoint import (CheckpointError, list_checkpoints, load_trainer_state, load_weights, read_meta, rng_state,
                         save_checkpoint, set_rng_state, verify_checkpoint)
from .config import TrainConfig
from .curriculum import Curriculum, EncodedExample, encode_example
from .engine import LatentBatch, LatentEngine
from .evaluate import predict, score_predictions, step_exact_match
from .models import build_pretrained, build_tiny, load_model, task_corpus, tie_embeddings
from .placement import choose_device, place
from .tasks import get_task
from .tokenizer import load_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class Setup:
    """A run's parts: task, tokenizer, model, token ids, prompt encoder, engine, encoded data."""

    task: object
    tokenizer: object
    model: torch.nn.Module
    tokens: TokenIds
    encoder: object
    engine: LatentEngine
    train: list[EncodedExample]
    val: list[EncodedExample]
    val_examples: dict  # id -> task Example (for scoring)


def load_split(task, cfg: TrainConfig, split: str, limit: int | None):
    examples = task.load(cfg.data.source, split, on_error=cfg.data.on_error)
    return list(examples)[:limit] if limit is not None else list(examples)


def build_model(cfg: TrainConfig, task, examples, device: torch.device, log):
    """(model, tokenizer) of a run: from an ivtlr checkpoint, tiny from scratch, or pretrained; placed on device."""
    where = place(cfg.model.dtype, device)  # training: float32 unless a GPU supports bfloat16 (or asked otherwise)
    log(str(where))
    if cfg.model.init_from is not None:
        loaded = load_model(cfg.model.init_from, trainable=True, dtype=cfg.model.dtype, device=device)
        model, tokenizer = loaded.model, loaded.tokenizer
        if cfg.model.tie_on_init:
            if hasattr(model, "peft_config"):
                raise ValueError(f"model.tie_on_init: {cfg.model.init_from} is a LoRA adapter; only full weights "
                                 "are tied")
            tie_embeddings(model)
        log(f"initialised from {cfg.model.init_from}: {sum(p.numel() for p in model.parameters()):,} parameters"
            + (" (output head tied to the input embeddings)" if cfg.model.tie_on_init else ""))
    elif cfg.model.name_or_path is None:
        model, tokenizer = build_tiny(cfg.model, task_corpus(task, examples), cfg.optim.seed)
        log(f"tiny {cfg.model.backbone} from scratch: {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"vocabulary {len(tokenizer)} (full fine-tuning)")
    else:
        tokenizer = load_tokenizer(cfg.model.name_or_path)
        model = build_pretrained(cfg.model, tokenizer, where.dtype, log)
    return model.to(device=where.device, dtype=where.dtype), tokenizer


def build_setup(cfg: TrainConfig, device: torch.device, log=print) -> Setup:
    """Build the run's parts on ``device`` (dtype from ``ivtlr.placement``). Raises ValueError naming a record whose
    image has fewer tokens than K x the last stage's latent steps."""
    task = get_task(cfg.data.task, prompt_style=cfg.data.prompt_style)
    train_raw = load_split(task, cfg, cfg.data.train_split, cfg.data.max_train)
    val_raw = load_split(task, cfg, cfg.data.val_split, cfg.data.val_size) if cfg.data.val_size else []
    model, tokenizer = build_model(cfg, task, train_raw or val_raw, device, log)
    fam = family_of(model)
    if fam.name != cfg.model.backbone:
        raise ValueError(f"model.backbone is {cfg.model.backbone!r} but the model "
                         f"({cfg.model.init_from or cfg.model.name_or_path}) is a {fam.name}: set --model.backbone {fam.name}")
    tokens = fam.token_ids(tokenizer)
    encoder = fam.prompt_encoder(tokenizer, cfg.model.image_size)
    latent = cfg.latent
    if cfg.run.gradient_checkpointing and latent.use_cache:
        log("gradient checkpointing drops the KV cache in training: the engine recomputes the prefix per latent pass")
        latent = dataclasses.replace(latent, use_cache=False)
    engine = LatentEngine(fam(model, tokens), latent)
    train = [encode_example(task, encoder, ex, tokens.image) for ex in train_raw]
    val = [encode_example(task, encoder, ex, tokens.image) for ex in val_raw]
    if not cfg.curriculum.no_cot:  # no latent steps at all without a chain of thought
        check_latent_budget(train + val, latent.k_effective, cfg.curriculum.max_latent_stage)
    return Setup(task, tokenizer, model, tokens, encoder, engine, train, val, {ex.id: ex for ex in val_raw})


def check_latent_budget(examples: list[EncodedExample], k: int, stages: int) -> None:
    """Raise ValueError naming the first record whose image has fewer tokens than K x ``stages`` latent steps
    select (a patch is never selected twice)."""
    for ex in examples:
        if ex.n_image_tokens < k * stages:
            raise ValueError(f"record {ex.id!r}: its image has {ex.n_image_tokens} tokens, fewer than K x "
                             f"max_latent_stage = {k} x {stages} = {k * stages}")


class LatentModule(nn.Module):
    """The model plus the engine as one module, so DDP/FSDP see a forward that runs every latent pass."""

    def __init__(self, engine: LatentEngine):
        super().__init__()
        self.model = engine.backbone.model
        self.engine = engine

    def forward(self, batch: LatentBatch):
        return self.engine.forward(batch)


@dataclass
class Position:
    """Where training is: optimizer steps done, epoch, next batch within the epoch."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    streak: int = 0
    """Validations in a row of the current stage at or above ``curriculum.stop_at`` (``stop_patience``)."""
    overtime: int = 0
    """Overtime epochs begun so far in the run (``curriculum.overtime_epochs``)."""
    stage_best: float | None = None
    """The current stage's best validation accuracy so far (``curriculum.overtime_within``)."""
    in_overtime: bool = False
    """Whether the epoch being trained is the last of them (it then repeats its stage's last planned epoch index,
    with a data order of its own)."""

    @property
    def overtime_index(self) -> int:
        """0 in a planned epoch; k in the run's k-th overtime epoch."""
        return self.overtime if self.in_overtime else 0


def claim_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a folder that holds a run unless told to continue it or to replace it."""
    if resume and overwrite:
        raise ValueError("--run.resume and --run.overwrite exclude each other: continue the run, or replace it")
    held = [name for name in ("checkpoints", "metrics.jsonl", "tensorboard", "best") if (out / name).exists()]
    if not held or resume:
        return
    if not overwrite:
        n = len(list_checkpoints(out))
        raise ValueError(f"{out} already holds a run ({n} checkpoint(s); {', '.join(held)}): continue it with "
                         "--run.resume, start afresh with --run.overwrite (deletes it), or choose another "
                         "--run.out_dir")
    for name in held:
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()


class Trainer:
    def __init__(self, config: TrainConfig):
        config.check_sections()
        self.config = config
        self.pos = Position()
        self.last_validation: dict | None = None
        self.last_accuracy: float | None = None
        """The last validation's accuracy, on every rank (``select``)."""

    # ------------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        from accelerate import Accelerator

        cfg = self.config
        cpu = choose_device().type == "cpu"  # the project's device policy (accelerate then picks the rank's GPU)
        self.acc = Accelerator(cpu=cpu, gradient_accumulation_steps=cfg.optim.grad_accum)
        self.is_main = self.acc.is_main_process
        self.out = Path(cfg.run.out_dir)
        if cfg.data.source and not Path(cfg.data.source).is_absolute() and Path(cfg.data.source).exists():
            # a local dataset is recorded absolute, so the checkpoints evaluate from any directory
            cfg = self.config = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                                                  source=str(Path(cfg.data.source).resolve())))
        if self.is_main:
            claim_run_folder(self.out, cfg.run.resume, cfg.run.overwrite)
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out / "config.yaml")
        self.s: Setup = build_setup(cfg, device=self.acc.device, log=self.log)
        if cfg.run.gradient_checkpointing:
            self.s.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(self.s.model, "enable_input_require_grads"):
                self.s.model.enable_input_require_grads()
        self.curriculum = Curriculum(cfg.curriculum, self.s.tokens.latent, cfg.data.max_length, cfg.optim.seed)
        self.module = LatentModule(self.s.engine)
        self.module = self.acc.prepare(self.module)
        self.new_optimizer()
        self.metrics_path = self.out / "metrics.jsonl"
        self.tb = None
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out / "tensorboard"))
        self.wandb = None
        if cfg.run.wandb and self.is_main:
            try:
                import wandb

                self.wandb = wandb.init(project="ivtlr", config=cfg.to_dict(), dir=str(self.out))
            except ImportError:
                self.log("wandb is not installed: logging to TensorBoard only")

    def log(self, message: str) -> None:
        if getattr(self, "acc", None) is None or self.acc.is_main_process:
            print(message, flush=True)

    @property
    def world(self) -> int:
        return self.acc.num_processes

    @property
    def batches_per_epoch(self) -> int:
        global_batch = self.config.optim.batch_size * self.world
        return math.ceil(len(self.s.train) / global_batch)

    def steps_per_stage(self, stage: int) -> int:
        cur = self.config.curriculum
        epochs = sum(1 for e in range(cur.total_epochs) if cur.stage(e) == stage)
        return math.ceil(self.batches_per_epoch / self.config.optim.grad_accum) * max(1, epochs)

    def new_optimizer(self) -> None:
        cfg = self.config.optim
        params = [p for p in self.s.model.parameters() if p.requires_grad]
        cur = self.config.curriculum
        lr = cfg.latent_lr if cfg.latent_lr and cur.stage(self.pos.epoch) >= 1 else cfg.lr
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
        if cur.reset_optimizer:  # a schedule per stage, restarted with the optimizer
            total = self.steps_per_stage(cur.stage(self.pos.epoch))
        else:  # one schedule over the whole run
            total = math.ceil(self.batches_per_epoch / cfg.grad_accum) * cur.total_epochs
        warm = cfg.warmup_steps

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if cfg.schedule == "constant":
                return 1.0
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        self.optimizer = self.acc.prepare(optimizer)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer.optimizer, factor)

    # --------------------------------------------------------------------------------------------- data
    def epoch_batches(self, epoch: int, overtime: int = 0) -> list[list[EncodedExample]]:
        """This rank's batches of an epoch: a permutation seeded by (seed, epoch), and by the overtime epoch's
        index k >= 1 (``curriculum.overtime_epochs``) apart from every planned epoch, split over the ranks."""
        order = list(range(len(self.s.train)))
        random.Random(self.config.optim.seed * 7919 + epoch + 1_000_003 * overtime).shuffle(order)
        bs = self.config.optim.batch_size
        out = []
        for b in range(self.batches_per_epoch):
            chunk = order[b * bs * self.world:(b + 1) * bs * self.world]
            mine = chunk[self.acc.process_index::self.world] or chunk[:1]  # a short last batch: never empty
            out.append([self.s.train[i] for i in mine])
        return out

    # ------------------------------------------------------------------------------------------- resume
    def resume(self) -> bool:
        ckpts = list_checkpoints(self.out)
        if not ckpts:
            self.log(f"--run.resume: no checkpoint in {self.out}/checkpoints, starting fresh")
            return False
        for path in reversed(ckpts):  # the newest valid one; a corrupt newest one falls back, with a warning
            try:
                verify_checkpoint(path)
                state = load_trainer_state(path)
                load_weights(self.s.model, path)
                break
            except CheckpointError as err:
                older = [p for p in ckpts if p < path]
                if not older:
                    raise CheckpointError(f"--run.resume: no valid checkpoint in {self.out}/checkpoints; the last "
                                          f"one tried: {err}") from None
                self.log(f"warning: {path} is corrupt ({err}); resuming from {older[-1]} instead")
        self.pos = Position(**state["position"])
        self.new_optimizer()
        self.optimizer.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"][min(self.acc.process_index, len(state["rng"]) - 1)])
        if self.is_main and self.metrics_path.is_file():  # forget steps logged after the checkpoint
            kept = [line for line in self.metrics_path.read_text().splitlines()
                    if line and json.loads(line).get("step", 0) <= self.pos.step]
            self.metrics_path.write_text("".join(line + "\n" for line in kept))
        self.log(f"resumed from {path} (step {self.pos.step}, epoch {self.pos.epoch}, batch {self.pos.batch})")
        return True

    def save(self, tag: str) -> None:
        from accelerate.utils import gather_object

        rngs = gather_object([rng_state()])
        self.acc.wait_for_everyone()
        if self.is_main:
            state = {"position": vars(self.pos).copy(), "stage": self.config.curriculum.stage(self.pos.epoch),
                     "optimizer": self.optimizer.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "rng": rngs}
            path = save_checkpoint(self.out, self.pos.step, self.acc.unwrap_model(self.module).model,
                                   self.s.tokenizer, self.config, state, tag, self.config.run.keep_last)
            self.log(f"saved {path} ({tag})")
        self.acc.wait_for_everyone()

    # -------------------------------------------------------------------------------------------- train
    def train_step(self, examples: list[EncodedExample], stage: int) -> tuple[float, int, float | None]:
        rng = self.curriculum.mixing_rng(self.pos.step * 1000 + self.pos.batch)
        batch = collate([self.curriculum.sample(ex, stage, rng) for ex in examples], self.s.tokens.pad)
        batch = batch.to(self.acc.device)
        grad_norm = None
        with self.acc.accumulate(self.module):
            out = self.module(batch)
            self.acc.backward(out.loss)
            if self.acc.sync_gradients:
                if self.config.optim.grad_clip > 0:
                    grad_norm = float(self.acc.clip_grad_norm_(self.s.model.parameters(), self.config.optim.grad_clip))
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
        return out.loss.item(), int(batch.attention_mask.sum()), grad_norm

    def train_epoch(self, epoch: int, bar) -> str:
        """Run the rest of an epoch. Returns "done", "max_steps" (``max_steps`` stopped it) or "stage_done" (a
        validation reached ``curriculum.stop_at``: the stage's remaining epochs are skipped)."""
        cfg = self.config
        stage = cfg.curriculum.stage(epoch)
        batches = self.epoch_batches(epoch, self.pos.overtime_index)
        while self.pos.batch < len(batches):
            t0 = time.perf_counter()
            loss, n_tokens, grad_norm = self.train_step(batches[self.pos.batch], stage)
            dt = time.perf_counter() - t0
            self.pos.batch += 1
            if (self.pos.batch % cfg.optim.grad_accum) and self.pos.batch < len(batches):
                continue
            self.pos.step += 1
            record = {"step": self.pos.step, "epoch": epoch, "stage": stage, "loss": loss,
                      "lr": self.scheduler.get_last_lr()[0], "tokens_per_s": n_tokens * self.world / dt,
                      "grad_norm": grad_norm}
            if self.pos.in_overtime:
                record["overtime"] = self.pos.overtime
            self.write_metrics(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
            if cfg.run.save_every and self.pos.step % cfg.run.save_every == 0 and self.pos.batch < len(batches):
                self.save(f"step-{self.pos.step}")
            if cfg.run.val_every and self.pos.step % cfg.run.val_every == 0 and self.pos.batch < len(batches):
                self.last_validation = self.validate(stage)
                if self.select(stage, self.last_validation):
                    self.pos.epoch, self.pos.batch = cfg.curriculum.stage_end(epoch) + 1, 0
                    self.pos.in_overtime = False
                    return "stage_done"
            if cfg.run.max_steps is not None and self.pos.step >= cfg.run.max_steps:
                return "max_steps"
        self.pos.epoch, self.pos.batch, self.pos.in_overtime = epoch + 1, 0, False
        return "done"

    def write_metrics(self, record: dict) -> None:
        if not self.is_main:
            return
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and record.get("step", 0) % max(1, self.config.run.log_every) == 0:
            stage = record.get("stage", 0)
            for key in ("loss", "lr", "tokens_per_s", "grad_norm"):
                if record.get(key) is not None:
                    self.tb.add_scalar(f"train/{key}" if key != "loss" else f"train/loss_stage{stage}",
                                       record[key], record["step"])
        if self.wandb is not None:
            self.wandb.log(record)

    # ----------------------------------------------------------------------------- selection by validation
    @property
    def best_dir(self) -> Path:
        return self.out / "best"

    def best_checkpoint(self, stage: int) -> Path | None:
        """The checkpoint of ``stage``'s best validation so far (``best/stage-S/checkpoints``), or None."""
        ckpts = list_checkpoints(self.best_dir / f"stage-{stage}")
        return ckpts[-1] if ckpts else None

    def best_record(self, stage: int) -> dict | None:
        """{"step", "val_accuracy"} of ``stage``'s best validation so far, or None."""
        path = self.best_checkpoint(stage)
        if path is None:
            return None
        return {"step": read_meta(path)["step"], "val_accuracy": load_trainer_state(path)["val_accuracy"]}

    def select(self, stage: int, record: dict | None, finished_epoch: int | None = None) -> bool:
        """Model selection after a validation (every rank calls it; rank 0's record decides): remember the
        stage's best weights (``curriculum.keep_best``) and say whether the stage is done (``curriculum.stop_at``).
        ``finished_epoch``: the validation follows that epoch's last step (it counts as done); else it lies inside
        epoch ``pos.epoch``."""
        from accelerate.utils import broadcast_object_list

        cur = self.config.curriculum
        acc = [record["val_accuracy"] if record else None]
        if self.world > 1:
            broadcast_object_list(acc)
        acc = self.last_accuracy = acc[0]
        if acc is None:
            return False
        self.pos.stage_best = acc if self.pos.stage_best is None else max(self.pos.stage_best, acc)
        if cur.keep_best and self.is_main:
            best = self.best_record(stage)
            if best is None or acc >= best["val_accuracy"]:  # a tie goes to the later (longer trained) weights
                # the run's own atomic checkpoint writer; keep_last=1 drops the previous best once this one is whole
                save_checkpoint(self.best_dir / f"stage-{stage}", self.pos.step,
                                self.acc.unwrap_model(self.module).model, self.s.tokenizer, self.config,
                                {"stage": stage, "val_accuracy": acc}, f"stage-{stage}-best", keep_last=1)
        if cur.stop_at is None:
            return False
        self.pos.streak = self.pos.streak + 1 if acc >= cur.stop_at else 0
        # epochs of the stage done: those before the validated epoch, and that epoch once finished or in overtime
        epoch = self.pos.epoch if finished_epoch is None else finished_epoch
        done = cur.epochs_into_stage(epoch) + (finished_epoch is not None or self.pos.in_overtime)
        if self.pos.streak >= cur.stop_patience and done >= cur.stop_after:
            # never within a stage's first stop_after epochs: a stage cut short in its first epoch leaves the next
            # one unable to learn
            row = f" ({self.pos.streak} validations in a row)" if cur.stop_patience > 1 else ""
            self.log(f"stage {stage}: validation accuracy {100 * acc:.1f}% >= curriculum.stop_at "
                     f"{100 * cur.stop_at:.1f}%{row}, at least {cur.stop_after} epoch(s) into the stage: the stage "
                     f"ends at step {self.pos.step}")
            return True
        return False

    def end_or_extend_stage(self, stage: int, epoch: int) -> None:
        """At the end of a stage's last epoch: end the stage, or, for a latent stage whose stop rule has not held
        while the run has ``curriculum.overtime_epochs`` left, train one more epoch of it, if its validation here is
        within ``curriculum.overtime_within`` of its best (a plateau, not a fall). The validation that decides is
        the one that ends a stage, so a stage that ends here ends exactly as without overtime."""
        cur = self.config.curriculum
        if stage == 0 or cur.stop_at is None or self.pos.overtime >= cur.overtime_epochs:
            self.end_stage(stage, validated=False)
            return
        self.last_validation = self.validate(stage)
        done = self.select(stage, self.last_validation, finished_epoch=epoch)
        fallen = self.fallen_from_best()
        if done or fallen:
            if fallen:
                self.log(f"stage {stage}: validation {100 * fallen[0]:.1f}% at the end of epoch {epoch + 1}, more "
                         f"than curriculum.overtime_within below its best {100 * fallen[1]:.1f}%: no overtime")
            self.end_stage(stage, validated=True)
            return
        self.pos.overtime += 1
        self.pos.epoch, self.pos.batch, self.pos.in_overtime = epoch, 0, True  # the same epoch index again
        self.log(f"stage {stage}: its stop rule has not held by the end of epoch {epoch + 1}: overtime epoch "
                 f"{self.pos.overtime} of the run's {cur.overtime_epochs}")

    def end_or_extra_epoch(self, epoch: int) -> None:
        """At the end of stage 0's planned epochs (or of one of its extra epochs): validate, and end stage 0 here,
        as without ``curriculum.cot_extra_epochs``, unless its stop rule has not held and its best validation is
        still below ``curriculum.cot_extra_below``; then it trains its next epoch."""
        cur = self.config.curriculum
        self.last_validation = self.validate(0)
        done = self.select(0, self.last_validation, finished_epoch=epoch)
        best = self.pos.stage_best
        if done or best is None or best >= cur.cot_extra_below:
            self.pos.epoch = cur.stage_end(epoch) + 1
            self.end_stage(0, validated=True)
            return
        self.log(f"stage 0: best validation {100 * best:.1f}% by the end of epoch {epoch + 1}, below "
                 f"curriculum.cot_extra_below {100 * cur.cot_extra_below:.1f}%: it trains epoch {epoch + 2} (at most "
                 f"{cur.stage0_epochs})")

    def fallen_from_best(self) -> tuple[float, float] | None:
        """(last, best) validation accuracy of the stage when the last one lies more than
        ``curriculum.overtime_within`` below the best (the same on every rank: ``select`` broadcast it); else None."""
        last, best = self.last_accuracy, self.pos.stage_best
        if last is None or best is None or best - last <= self.config.curriculum.overtime_within + 1e-9:
            return None
        return last, best

    def end_stage(self, stage: int, validated: bool) -> None:
        """Validate the stage's last weights (unless ``validated`` at this step already), under
        ``curriculum.keep_best`` go back to its best validated weights, then checkpoint the stage's end."""
        if validated:
            record = self.last_validation
        else:
            record = self.validate(stage)
            self.select(stage, record)
        if self.config.curriculum.keep_best:
            self.acc.wait_for_everyone()  # rank 0 wrote best/; every rank reads it (a shared file system, as for
            best = self.best_record(stage)  # the checkpoints)
            if best is not None and best["step"] != self.pos.step:
                path = self.best_checkpoint(stage)
                verify_checkpoint(path)
                load_weights(self.s.model, path)
                last = f", last step {100 * record['val_accuracy']:.1f}%" if record else ""
                self.log(f"stage {stage} ends with the weights of step {best['step']} (validation "
                         f"{100 * best['val_accuracy']:.1f}%{last})")
                self.write_metrics({"step": self.pos.step, "stage": stage, "selected_step": best["step"],
                                    "val_accuracy": best["val_accuracy"]})
        self.pos.streak, self.pos.stage_best = 0, None  # the next stage counts its own validations
        self.save(f"stage-{stage}-end")

    # ------------------------------------------------------------------------------------------ validate
    def validate(self, stage: int) -> dict | None:
        """Accuracy on the validation subset through the real generation path (rank 0)."""
        if not self.is_main or not self.s.val:
            return None
        engine = self.s.engine
        was_training = self.s.model.training
        self.s.model.eval()
        # as many latent steps as the stage's training layout has: min(stage, the rationale's steps), one number
        # for every question as at evaluation
        rationale_steps = max(len(ex.step_ids) for ex in self.s.val)
        n = self.curriculum.n_latents(stage, rationale_steps) if not self.config.curriculum.no_cot else 0
        records = predict(engine, self.s.encoder, self.s.val, n, self.config.run.val_max_new_tokens,
                          self.config.run.eval_batch_size)
        report = score_predictions(self.s.task, self.s.val_examples, records)
        self.s.model.train(was_training)
        judge = report.judges[0]
        acc = report.overall[judge].accuracy
        steps = sum(r.n_generated for r in records) / len(records)
        match = step_exact_match(self.s.task, self.s.val_examples, records) if n == 0 else []
        self.log(f"stage {stage} step {self.pos.step}: validation accuracy {100 * acc:.1f}% ({judge}), {steps:.1f} "
                 f"generated tokens per question, on {len(records)} questions"
                 + (f"; exact match per written step {', '.join(f'{100 * m:.0f}%' for m in match)}" if match else ""))
        record = {"step": self.pos.step, "stage": stage, "val_accuracy": acc, "val_ar_steps": steps,
                  "val_by_kind": {k.split("/")[-1]: v[judge].accuracy for k, v in report.groups.get("topic", {}).items()}}
        if match:
            record["val_step_match"] = match
        self.write_metrics(record)
        if self.tb is not None:
            self.tb.add_scalar("val/accuracy", acc, self.pos.step)
        return record

    # ----------------------------------------------------------------------------------------------- run
    def run(self) -> None:
        cfg = self.config
        if not hasattr(self, "s"):  # a caller may have set it up already (to check the data first)
            self.setup()
        if cfg.run.resume:
            self.resume()
        self.s.model.train()
        from tqdm.auto import tqdm

        total_epochs = cfg.curriculum.total_epochs
        self.log(f"training {len(self.s.train)} examples, {total_epochs} epochs, "
                 f"{self.batches_per_epoch} batches per epoch per process, {self.world} process(es)")
        while self.pos.epoch < total_epochs:
            epoch = self.pos.epoch
            stage = cfg.curriculum.stage(epoch)
            if (cfg.curriculum.is_stage_start(epoch) and self.pos.batch == 0 and epoch > 0 and not self.pos.in_overtime
                    and cfg.curriculum.reset_optimizer):
                self.new_optimizer()
            bar = None
            if self.is_main and cfg.run.progress:
                extra = f" overtime {self.pos.overtime}" if self.pos.in_overtime else ""
                bar = tqdm(total=self.batches_per_epoch // cfg.optim.grad_accum,
                           initial=self.pos.batch // cfg.optim.grad_accum,
                           desc=f"stage {stage} epoch {epoch + 1}/{total_epochs}{extra}", leave=False)
            outcome = self.train_epoch(epoch, bar)
            if bar is not None:
                bar.close()
            if outcome == "max_steps":
                self.save(f"max-steps-{self.pos.step}")
                self.log(f"stopped at step {self.pos.step} (run.max_steps); continue with --run.resume")
                return
            if outcome == "stage_done":
                self.end_stage(stage, validated=True)
            elif cfg.curriculum.is_stage_end(epoch):
                self.end_or_extend_stage(stage, epoch)
            elif cfg.curriculum.is_extra(epoch + 1):
                self.end_or_extra_epoch(epoch)
        if self.tb is not None:
            self.tb.close()
        self.log(f"done: {self.pos.step} steps; checkpoints in {self.out / 'checkpoints'}")
