"""``ivtlr demo``: the paper's tables in miniature, on a CPU, from nothing.

1. generates the synthetic visual multi-step benchmark (``ivtlr data synth``);
2. trains a tiny VLM from scratch: stage 0 (chain-of-thought) and, side by side, the No-CoT baseline; then, from
   the stage-0 checkpoint, the latent stages 1-3 with the demo's recipe and, side by side, with the authors'
   exact latent semantics (when the recipe differs from them), keeping every stage's checkpoint;
3. evaluates every mode on the test split (``results.json`` rows): IVT-LR, CoT, No-CoT, blind baselines (images
   replaced by gray), the ablations (no latent text, no latent vision, no latent part, random patches instead of
   the attention's top-K), every stage with its own latents, the authors' setting;
4. runs ``ivtlr analyze`` on the final model (selection hit rates, probes, interventions, scales);
5. writes ``<out>/report.md`` (tables, the targets met or not, the diagnostics) and PNG plots.

Schedule on two cores::

    core 1:  stage 0 (CoT)  ───────────────►  latent stages 1-3 (recipe)   ─┐
    core 2:  No-CoT baseline ──────────────►  latent stages 1-3 (authors')  ─┴─►  evaluation, analysis, report

``--quick`` runs a half-minute version (the test suite runs it end to end); the full size is the README's main
command. Every figure in the report comes from this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..analyze import AnalysisInputs, INTERVENTIONS, run_analysis, write_analysis
from ..checkpoint import stage_checkpoints
from ..backbones import BACKBONES
from ..config import CurriculumConfig, TrainConfig
from ..data.synth import generate
from ..data.synth.config import DOT_STYLES, STEP_STYLES, SynthConfig
from ..evaluate import blind, run_eval, time_batch1
from ..inference import load_inference
from ..placement import describe_cpu, usable_cores
from ..tasks import get_task
from ..train import Trainer, check_latent_budget
from .report import AUTHORS_LATENT, publish, write_report


@dataclass
class DemoRecipe:
    """Everything the demo trains with. The defaults (``RECIPES["full"]``) are the measured best recipe of
    docs/latent-reasoning.md; every field is also a flag of ``ivtlr demo``'s experiments."""

    n_train: int
    n_test: int
    cot_epochs: int
    """Epochs of stage 0 (chain-of-thought)."""
    epochs_per_stage: int
    """Epochs of each latent stage."""
    nocot_epochs: int
    hidden: int
    layers: int
    batch_size: int
    lr: float
    heads: int = 4
    latent_lr: float = 0.0
    """Learning rate of the latent stages under the recipe's latent options (0: ``lr``). The authors' row, trained
    beside them when those options differ from the authors', keeps ``lr``: the rate measured best for their
    semantics (docs/latent-reasoning.md)."""
    vocab: int = 600
    warmup_steps: int = 50
    k: int = 1
    """Image tokens per latent step; K x 3 steps stay below the board's 9 tokens, so the selection must choose."""
    latent_grad: str = "detach"
    feedback_norm: str = "none"
    order: str = "vision_first"
    """Per latent step [z_t, h_t] (vision_first, the authors' code) or [h_t, z_t] (text_first, the paper's formula,
    where the inserted patch is the last position of the step: its state is fed back and its row selects)."""
    selection: str = "behind"
    """Which attention row picks z_t: the row of the position that produced h_t (behind, the authors') or the row of
    h_t's own slot (ahead, with text_first; ``LatentConfig.selection``)."""
    stage_mix_prob: float = 0.0
    """Chance that a training example of latent stage s is shown at an earlier stage (1..s-1) instead."""
    stage_epochs: tuple = ()
    """Epochs of each latent stage (1..max_latent_stage); empty: epochs_per_stage each."""
    schedule: str = "constant"
    """Learning-rate schedule after the warmup (constant, as the authors; or cosine per stage)."""
    tie_embeddings: bool = True
    """The tiny model's output head shares its input embeddings."""
    cot_untied: bool = False
    """With tie_embeddings: stage 0 trains with an output head of its own, and the latent stages start from it tied,
    its input embeddings as the one matrix (``model.tie_on_init``; docs/latent-reasoning.md, "Stage 0 untied"). The
    recipes' default: a tied stage 0 can plateau with one or two colours whose cell it never learns to find."""
    synth: dict = field(default_factory=dict)
    """Knobs of the synthetic benchmark (``ivtlr.data.synth.SynthConfig``)."""
    max_latent_stage: int = 3
    n_val: int = 0
    """Questions of the benchmark's own validation split (never the test questions), validated every
    ``val_every`` steps of the latent stages, for the two options below (0: neither)."""
    cot_n_val: int = 0
    """Stage 0 validates on the first this many of them (0: all n_val): its validation writes a whole chain per
    question, and it only has to tell a model that reads the chain from one that does not."""
    val_every: int = 0
    stop_at: float = 0.0
    """A latent stage ends once a validation reaches this accuracy (0-1; 0: never early); its epochs are then a
    maximum (``curriculum.stop_at``)."""
    stop_patience: int = 1
    """stop_at ends a stage only at this many validations in a row at or above it (``curriculum.stop_patience``)."""
    keep_best: bool = False
    """Each latent stage ends with its best-validated weights (``curriculum.keep_best``)."""
    overtime_epochs: int = 0
    """Extra epochs, at most this many in all, for latent stages whose stop rule has not held by the end of their
    planned epochs (``curriculum.overtime_epochs``)."""
    overtime_within: float = CurriculumConfig.overtime_within
    """Overtime only while the stage's validation is within this of its best (``curriculum.overtime_within``)."""
    eval_batch_size: int = 64
    """Generation batch of the validations, the test evaluation and the diagnostics: a speed knob only (a batch
    predicts what its questions predict one by one: tests/test_engine.py, and tests/test_demo.py on a trained
    demo model)."""
    latency_rounds: int = 3
    """Rounds of the batch-1 timing (``Evaluator.retime``); a row's latency is the median over all of them."""
    latency_questions: int = 32
    """Test questions timed at batch size 1 in each round (at most the test split's)."""
    cot_stop_after: int = 0
    """Stage 0 is selected by validation too: ``cot_epochs`` become a maximum, and stage 0 ends at the first
    validation at ``stop_at`` after this many epochs (``curriculum.stop_after``), with its best weights under
    ``keep_best`` (0: stage 0 trains its ``cot_epochs`` without validation)."""
    cot_extra_epochs: int = 0
    """With stage 0 selected by validation: epochs it may train past ``cot_epochs`` while its best validation is
    below ``cot_extra_below`` (``curriculum.cot_extra_epochs``): a chain-of-thought that has not learnt to read
    the board by its cap."""
    cot_extra_below: float = 0.0
    """See ``cot_extra_epochs`` (the full recipe: 0.75, the CoT target of 70% with a margin for the validation
    split)."""

    @property
    def selects_stage0(self) -> bool:
        """Whether stage 0 is selected by validation (``cot_stop_after`` with a validation split to use)."""
        return bool(self.cot_stop_after and self.n_val and self.val_every)

    @property
    def authors(self) -> dict:
        """The recipe's latent options that differ from the authors' semantics (detach, raw fed-back states,
        [z_t, h_t]), with the recipe's values."""
        return {k: getattr(self, k) for k, v in AUTHORS_LATENT.items() if getattr(self, k) != v}


SYNTH = dict(fixed_options=True, step_style="pairs", palette="wheel", dot_style="quadrant", kinds=("dot-colour",),
             answer_lead=True)
RECIPES = {
    "full": DemoRecipe(n_train=5000, n_test=300, cot_epochs=6, epochs_per_stage=1, nocot_epochs=2, hidden=128,
                       layers=4, batch_size=16, lr=1e-3, stage_mix_prob=0.5, stage_epochs=(2, 2, 5), synth=SYNTH,
                       n_val=600, cot_n_val=200, val_every=157, stop_at=1.0, stop_patience=2, keep_best=True,
                       cot_stop_after=4, cot_extra_epochs=2, cot_extra_below=0.75, overtime_epochs=2, cot_untied=True),
    "quick": DemoRecipe(n_train=96, n_test=24, cot_epochs=1, epochs_per_stage=1, nocot_epochs=1, hidden=32,
                        layers=2, batch_size=8, lr=3e-3, vocab=400, stage_mix_prob=0.5, synth=SYNTH,
                        n_val=8, val_every=4, stop_at=0.99, keep_best=True, latency_rounds=1, latency_questions=8,
                        cot_untied=True),
}


def authors_recipe(recipe: DemoRecipe) -> DemoRecipe:
    """The recipe of the report's authors' row: the authors' latent semantics at the rate measured best for them
    (``lr``, as stage 0), everything else as ``recipe``."""
    return replace(recipe, latent_lr=0.0, **AUTHORS_LATENT)


def train_config(recipe: DemoRecipe, data: Path, out: Path, backbone: str, seed: int, phase: str,
                 init_from: Path | None = None, **latent):
    """The TrainConfig of one of the demo's trainings. ``phase``: "cot" (stage 0 only), "latent" (stages
    1..max from ``init_from``) or "nocot"."""
    if recipe.cot_untied and not recipe.tie_embeddings:
        raise ValueError("cot_untied unties stage 0 of a tied model: it needs tie_embeddings")
    untied_cot = recipe.cot_untied and phase == "cot"
    cfg = TrainConfig()
    cfg.model = replace(cfg.model, backbone=backbone, tiny_hidden=recipe.hidden, tiny_layers=recipe.layers,
                        tiny_heads=recipe.heads if recipe.hidden >= 64 else 2, tiny_vocab=recipe.vocab,
                        tiny_tie_embeddings=recipe.tie_embeddings and not untied_cot,
                        init_from=str(init_from) if init_from else None,
                        tie_on_init=recipe.cot_untied and phase == "latent" and init_from is not None)
    cfg.data = replace(cfg.data, task="synth", source=str(data.resolve()), val_size=0)
    cur = dict(max_latent_stage=recipe.max_latent_stage, stage_mix_prob=recipe.stage_mix_prob)
    if phase == "cot":
        cur.update(cot_epochs=recipe.cot_epochs, max_latent_stage=0)
        if recipe.selects_stage0:
            cfg.data = replace(cfg.data, val_split="validation", val_size=recipe.cot_n_val or recipe.n_val)
            cur.update(stop_at=recipe.stop_at or None, stop_after=recipe.cot_stop_after, keep_best=recipe.keep_best,
                       stop_patience=recipe.stop_patience, cot_extra_epochs=recipe.cot_extra_epochs,
                       cot_extra_below=recipe.cot_extra_below)
    elif phase == "latent":
        cur.update(first_stage=1, epochs_per_stage=recipe.epochs_per_stage,
                   stage_epochs=list(recipe.stage_epochs) or None)
        if recipe.n_val and recipe.val_every:
            cfg.data = replace(cfg.data, val_split="validation", val_size=recipe.n_val)
            cur.update(stop_at=recipe.stop_at or None, keep_best=recipe.keep_best, stop_patience=recipe.stop_patience,
                       overtime_epochs=recipe.overtime_epochs if recipe.stop_at else 0,
                       overtime_within=recipe.overtime_within)
    else:
        cur.update(no_cot=True, epochs_per_stage=recipe.nocot_epochs)
    cfg.curriculum = replace(cfg.curriculum, **cur)
    cfg.optim = replace(cfg.optim, lr=recipe.lr, latent_lr=recipe.latent_lr, batch_size=recipe.batch_size,
                        schedule=recipe.schedule, warmup_steps=recipe.warmup_steps, seed=seed)
    cfg.run = replace(cfg.run, out_dir=str(out), keep_last=10, progress=phase != "nocot",
                      val_every=recipe.val_every if cfg.data.val_size else 0, eval_batch_size=recipe.eval_batch_size)
    cfg.latent = replace(cfg.latent, **{"k": recipe.k, "latent_grad": recipe.latent_grad,
                                        "feedback_norm": recipe.feedback_norm, "order": recipe.order,
                                        "selection": recipe.selection, **latent})
    return cfg


def write_benchmark(recipe: DemoRecipe, data: Path, seed: int) -> None:
    """The recipe's synthetic benchmark for ``seed`` (train, test and validation splits) in ``data``."""
    generate(data, n_train=recipe.n_train, n_test=recipe.n_test, seed=seed, n_val=recipe.n_val, **recipe.synth)


# ------------------------------------------------------------------------------------------------ training
class Background:
    """``ivtlr train CONFIG`` in a child process (one core), its output in a log file."""

    def __init__(self, cfg, out: Path, name: str, threads: int):
        cfg.save(out / f"{name}.yaml")
        self.name, self.log = name, out / f"{name}.log"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ivtlr.commands", "train", str(out / f"{name}.yaml")],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        self.t0 = time.perf_counter()

    def wait(self) -> float:
        if self.proc.wait() != 0:
            raise RuntimeError(f"the {self.name} training failed (exit {self.proc.returncode}):\n"
                               f"{self.log.read_text()[-2000:]}")
        return time.perf_counter() - self.t0

    def kill(self):
        self.proc.kill()


def train_all(recipe: DemoRecipe, data: Path, out: Path, backbone: str, seed: int, threads: int) -> dict:
    """The four trainings on the two-core schedule of the module docstring. Returns wall seconds per training."""
    timings = {}
    print(f"[2/5] stage 0 (chain-of-thought) of a tiny {backbone} from scratch; the No-CoT baseline trains beside "
          f"it (log: {out / 'nocot.log'})", flush=True)
    t0 = time.perf_counter()
    cot = Trainer(train_config(recipe, data, out / "cot", backbone, seed, "cot"))
    cot.setup()  # the data encoded: K x the latent stages is checked against its images before anything trains
    check_latent_budget(cot.s.train + cot.s.val, recipe.k, recipe.max_latent_stage)
    nocot = Background(train_config(recipe, data, out / "nocot", backbone, seed, "nocot"), out, "nocot", threads)
    authors = None
    try:
        cot.run()
        timings["cot"] = time.perf_counter() - t0
        timings["nocot"] = nocot.wait()
        stage0 = stage_checkpoints(out / "cot")[0]
        if recipe.authors:
            cfg = train_config(authors_recipe(recipe), data, out / "authors", backbone, seed, "latent", stage0)
            cfg.run.progress = False
            authors = Background(cfg, out, "authors", threads)
        print(f"[3/5] latent stages 1-{recipe.max_latent_stage} from the stage-0 checkpoint ("
              + (f"recipe: {recipe.authors}; the authors' setting trains beside it, log: {authors.log})"
                 if authors else "the authors' setting)"), flush=True)
        if authors is None:  # nothing trains beside it: the latent stages get both cores' threads
            torch.set_num_threads(min(2 * threads, usable_cores()))
        t0 = time.perf_counter()
        Trainer(train_config(recipe, data, out / "ivtlr", backbone, seed, "latent", stage0)).run()
        torch.set_num_threads(threads)
        timings["ivtlr"] = time.perf_counter() - t0
        if authors is not None:
            timings["authors"] = authors.wait()
    except BaseException:
        nocot.kill()
        if authors is not None:
            authors.kill()
        raise
    return timings


# ---------------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class Row:
    """One evaluated mode: a stable machine key, a label, which checkpoint and how."""

    key: str
    label: str
    checkpoint: str  # "stage0", "final", "nocot", "authors", "stage_<s>"
    n_latents: int
    max_new_tokens: int
    blind: bool = False
    latent: tuple = ()  # LatentConfig overrides as (name, value) pairs
    intervention: str | None = None  # a name of ivtlr.analyze.INTERVENTIONS, applied at every step


def demo_rows(recipe: DemoRecipe) -> list[Row]:
    n = recipe.max_latent_stage
    rows = [
        Row("ivtlr", f"IVT-LR ({n} latent steps)", "final", n, 16),
        Row("cot", "CoT (stage-0 model)", "stage0", 0, 128),
        Row("nocot", "No-CoT", "nocot", 0, 16),
        Row("blind_ivtlr", "blind IVT-LR (gray image)", "final", n, 16, blind=True),
        Row("blind_cot", "blind CoT (gray image)", "stage0", 0, 128, blind=True),
        Row("no_latent_text", "ablation: no latent text", "final", n, 16, latent=(("latent_text", False),)),
        Row("no_latent_vision", "ablation: no latent vision", "final", n, 16, latent=(("latent_vision", False),)),
        Row("no_latent_part", "ablation: no latent part (n=0)", "final", 0, 16),
        Row("random_patches", "ablation: random patches instead of top-K", "final", n, 16,
            intervention="vision_random"),
    ]
    # stage s < n still writes its last n - s steps: a CoT-sized budget
    rows += [Row(f"stage_{s}", f"stage {s} ({s} latent steps)", f"stage_{s}", s, 128) for s in range(1, n)]
    rows += [Row(f"k_{k}", f"IVT-LR K={k}", "final", n, 16, latent=(("k", k),)) for k in range(1, recipe.k)]
    if recipe.authors:
        rows.append(Row("ivtlr_authors", "IVT-LR, the authors' setting (detach, raw states, [z, h])", "authors", n, 16))
    return rows


class Evaluator:
    """Loads checkpoints once and runs the demo's rows on one test set."""

    def __init__(self, checkpoints: dict[str, Path], data: Path, n_test: int, batch_size: int = 32,
                 latency_rounds: int = 3, latency_questions: int = 32, latency_block: int = 4):
        self.checkpoints = checkpoints
        self.examples = list(get_task("synth").load(str(data), "test"))[:n_test]
        self.batch_size = batch_size
        self.latency_rounds, self.latency_questions = latency_rounds, min(latency_questions, len(self.examples))
        self.latency_block = latency_block
        self._loaded: dict[str, object] = {}
        self._timers: dict[str, object] = {}  # row key -> (lo, hi) -> batch-1 seconds of questions lo..hi-1
        self.results: dict[str, dict] = {}

    def inference(self, name: str):
        if name not in self._loaded:
            self._loaded[name] = load_inference(self.checkpoints[name])
        return self._loaded[name]

    def run(self, row: Row) -> dict:
        inf = self.inference(row.checkpoint).with_latent(**dict(row.latent))
        examples = [blind(ex) for ex in self.examples] if row.blind else self.examples
        t0 = time.perf_counter()
        intervention = INTERVENTIONS[row.intervention] if row.intervention else None
        res = run_eval(inf.engine, inf.encoder, inf.task, examples, row.n_latents, row.max_new_tokens,
                       self.batch_size, name=row.label, intervention=intervention,
                       latency_questions=0)  # the batch-1 timing is retime's, every mode block by block
        self._timers[row.key] = lambda lo, hi: [r.seconds for r in time_batch1(  # one untimed question first
            inf.engine, inf.encoder, res.encoded[lo:hi], row.n_latents, row.max_new_tokens, intervention,
            hi - lo, warmup_questions=1)]
        summary = {"key": row.key, **res.summary}
        judge = inf.task.judge_names[0]
        summary["by_kind"] = {k.split("/")[-1]: v[judge]["accuracy"]
                              for k, v in res.summary["report"]["groups"].get("topic", {}).items()}
        print(f"  {row.label:<44} accuracy {100 * summary['accuracy'][judge]:5.1f}%  AR steps "
              f"{summary['ar_steps']:6.1f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        self.results[row.key] = summary
        return summary

    def retime(self) -> None:
        """The batch-1 latency of every row, timed so that all modes see the same machine conditions: in each
        of ``latency_rounds`` rounds the timed questions are walked in blocks of ``latency_block``, and every row
        is timed on a block (after one untimed question of it) before the next block, so that two modes' timings
        lie a fraction of a second apart. (Rounds of one mode's 32 questions after another's, as before, left
        the same computation up to 7% apart on this shared CPU: seed 2's IVT-LR 28.1 ms against its blind
        IVT-LR's 26.2.) A row's latency is the median over all its rounds."""
        seconds: dict[str, list[float]] = {key: [] for key in self._timers}
        for _ in range(self.latency_rounds):
            for lo in range(0, self.latency_questions, self.latency_block):
                hi = min(lo + self.latency_block, self.latency_questions)
                for key, timer in self._timers.items():
                    seconds[key] += timer(lo, hi)
        for key, values in seconds.items():
            self.results[key]["latency_s"] = statistics.median(values)
            self.results[key]["latency_rounds"] = self.latency_rounds
            self.results[key]["latency_block"] = self.latency_block
            self.results[key]["latency_questions"] = self.latency_questions


# ---------------------------------------------------------------------------------------------------- main
def with_hops(recipe: DemoRecipe, hops: int, per_read: bool = False) -> DemoRecipe:
    """The recipe on questions of ``hops`` hops. By default the rationale keeps its three steps (the middle one
    reads every cell on the way), so the curriculum keeps its stages. ``per_read``: one rationale step per read
    (hops + 1), so one latent stage more per extra hop, each with the epochs of the recipe's middle stages."""
    recipe = replace(recipe, synth={**recipe.synth, "hops": hops})
    if not per_read:
        return recipe
    recipe = replace(recipe, synth={**recipe.synth, "step_per_read": True})
    n = hops + 1
    epochs = recipe.stage_epochs
    if epochs:  # the first stages' epochs, the middle ones' for the added stages, the last stage's at the end
        middle = epochs[-2] if len(epochs) > 1 else epochs[-1]
        epochs = tuple(epochs[:-1]) + (middle,) * (n - len(epochs)) + (epochs[-1],)
    return replace(recipe, max_latent_stage=n, stage_epochs=epochs)


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line: its own flags and one override per field of the recipe."""
    parser = argparse.ArgumentParser(prog="ivtlr demo", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a half-minute version (the tests run it; its batch-1 "
                        "timing is 1 round of 8 questions)")
    parser.add_argument("--out", help="output folder, new or empty (default runs/demo; with --quick runs/demo-quick)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished demo in --out (deleted first)")
    parser.add_argument("--backbone", default="qwen2-vl", choices=list(BACKBONES),
                        help="the model family of the tiny from-scratch VLM (default qwen2-vl)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the initialisation and the data order")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per training (0: 1 on <= 2 cores)")
    parser.add_argument("--publish-docs", metavar="DOCS", help="also copy the report to DOCS/results.md and its plots "
                        "to DOCS/img/demo/ (seed S: results-seedS.md, img/demo-seedS/; how docs/results*.md are made)")
    parser.add_argument("--eval-only", action="store_true", help="re-run only the evaluation, the analysis and the "
                        "report on the data and checkpoints already in --out")
    parser.add_argument("--print-config", action="store_true", help="print the recipe as one `ivtlr train` config "
                        "(how configs/demo-cpu.yaml is made) and exit")
    parser.add_argument("--step-style", choices=STEP_STYLES,
                        help=f"the benchmark's rationale wording (default: {SYNTH['step_style']}; see ivtlr data synth)")
    parser.add_argument("--hops", type=int, help="dots each question follows (default 2); the rationale keeps three "
                        "steps, its middle one reads every cell on the way (hops - 1 of them)")
    parser.add_argument("--step-per-read", action="store_true", help="with --hops: one rationale step per read "
                        "(hops + 1 steps) and as many latent stages, instead of the authors' three steps")
    parser.add_argument("--dot-style", choices=DOT_STYLES,
                        help=f"the dots' shape (default: {SYNTH['dot_style']}; see ivtlr data synth)")
    parser.add_argument("--image-size", type=int, help="the board's image side in pixels, a multiple of 84 (default 84: "
                        "on the Qwen backbones one 28 px image token per cell; 168: 2x2 tokens per cell, the quadrant "
                        "dot exactly one of them)")
    for f in dataclasses.fields(DemoRecipe):
        if f.type in ("int", "float", "str") and f.name not in ("n_test",):
            parser.add_argument(f"--{f.name.replace('_', '-')}", type={"int": int, "float": float, "str": str}[f.type],
                                help="recipe override (default: the recipe's)")
        elif f.type == "bool":
            parser.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=None,
                                help="recipe override (default: the recipe's)")
    return parser


def recipe_label(args) -> str:
    """Which base recipe the parsed flags start from: ``quick`` or ``full``."""
    return "quick" if args.quick else "full"


def recipe_from_args(args, parser: argparse.ArgumentParser) -> tuple[DemoRecipe, dict]:
    """The recipe that parsed demo flags ask for, and the overrides they made (for the report's command line).
    A bad combination is refused through ``parser.error`` before anything is generated or trained."""
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(DemoRecipe)
                 if getattr(args, f.name, None) is not None}
    recipe = replace(RECIPES[recipe_label(args)], **overrides)
    if not recipe.tie_embeddings and "cot_untied" not in overrides:  # untied throughout: no stage 0 to untie
        recipe = replace(recipe, cot_untied=False)
    if args.threads < 0:
        parser.error(f"--threads {args.threads}: give a number of threads, or 0 for the demo's own choice")
    grid = recipe.synth.get("grid", 3)
    if args.image_size is not None and (args.image_size <= 0 or args.image_size % (28 * grid)):
        parser.error(f"--image-size {args.image_size}: give a multiple of {28 * grid} px, so that each of the "
                     f"board's {grid}x{grid} cells covers whole 28 px image tokens")
    for knob in ("step_style", "dot_style", "image_size"):  # the benchmark's design, one knob each
        if getattr(args, knob) is not None:
            recipe = replace(recipe, synth={**recipe.synth, knob: getattr(args, knob)})
            overrides[knob] = getattr(args, knob)
    if args.step_per_read and args.hops is None:
        parser.error("--step-per-read needs --hops (with the default 2 hops the rationale is one step per read)")
    if args.hops is not None:
        recipe = with_hops(recipe, args.hops, args.step_per_read)
        overrides["hops"] = args.hops
        if args.step_per_read:
            overrides["step_per_read"] = True
    try:  # the benchmark's knobs and the trainings' configs are checked before anything is generated or trained
        SynthConfig(**recipe.synth)
        for phase in ("cot", "latent", "nocot"):
            train_config(recipe, Path("data"), Path("out"), "qwen2-vl", 0, phase)
    except ValueError as err:
        parser.error(str(err))
    return recipe, overrides


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    recipe, overrides = recipe_from_args(args, parser)
    if args.print_config:
        print(recipe_config_text(recipe, args.backbone), end="")
        return 0
    out = Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo"))
    code = run_demo(recipe, out, args.backbone, args.seed, args.threads, recipe_label(args),
                    eval_only=args.eval_only, overrides=overrides, overwrite=args.overwrite)
    if args.publish_docs:
        publish(out, Path(args.publish_docs))
    return code


def synth_flags(synth: dict) -> list[str]:
    """``ivtlr data synth`` flags of a dict of ``SynthConfig`` knobs."""
    flags = []
    for key, value in synth.items():
        flag = "--" + key.replace("_", "-")
        if value is True or value is False:
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            flags += [flag, *map(str, value)] if isinstance(value, (list, tuple)) else [flag, str(value)]
    return flags


def recipe_config_text(recipe: DemoRecipe, backbone: str = "qwen2-vl") -> str:
    """The recipe's IVT-LR training as one ``ivtlr train`` config (stage 0, then latent stages 1..max), as YAML
    with the fields that differ from the defaults. configs/demo-cpu.yaml is this text (a test checks it)."""
    import yaml

    data, out = Path("runs/synth"), Path("runs/demo-cpu")
    cot = train_config(recipe, data, out, backbone, 0, "cot")
    cfg = train_config(recipe, data, out, backbone, 0, "latent")
    cfg.data = replace(cfg.data, source=str(data))
    cfg.curriculum = replace(cfg.curriculum, first_stage=0, cot_epochs=cot.curriculum.cot_epochs)
    cfg.run = replace(cfg.run, progress=TrainConfig().run.progress)
    default, mine = TrainConfig().to_dict(), cfg.to_dict()
    keep = {"backbone", "tiny_hidden", "tiny_layers", "tiny_heads", "task", "max_latent_stage", "schedule",
            "latent_grad", "feedback_norm", "order", "selection"}  # shown even at their defaults: what one looks for
    body = {s: {k: v for k, v in mine[s].items() if v != default[s][k] or k in keep} for s in TrainConfig.SECTIONS}
    data_cmd = " ".join(["ivtlr data synth --out runs/synth", f"--n-train {recipe.n_train} --n-test {recipe.n_test}",
                         *([f"--n-val {recipe.n_val}"] if recipe.n_val else []),
                         "--seed 0", *synth_flags(recipe.synth)])
    head = ("# The CPU demo's IVT-LR training as one config: a tiny model trained from scratch on the synthetic\n"
            "# benchmark, stage 0 (chain-of-thought) then the latent stages, with the recipe of `ivtlr demo`.\n"
            "# Generated by `ivtlr demo --print-config > configs/demo-cpu.yaml` (a test checks that it is current).\n"
            "# The demo itself trains stage 0 and the latent stages as two runs, and the No-CoT baseline, then\n"
            "# evaluates every mode"
            + (f"; its stage-0 run also validates (on the first {recipe.cot_n_val or recipe.n_val} validation "
               f"questions)\n# and stops at {100 * recipe.stop_at:.0f}% only after {recipe.cot_stop_after} epochs "
               "(curriculum.stop_after, which one config cannot set\n# for stage 0 alone)"
               + (f", and trains up to {recipe.cot_extra_epochs} more epochs while its best validation is below "
                  f"{100 * recipe.cot_extra_below:.0f}%\n# (curriculum.cot_extra_epochs, for a run of stage 0 alone)"
                  if recipe.cot_extra_epochs else "")
               if recipe.selects_stage0 else "")
            + (";\n# its stage 0 has an output head of its own, tied to the input embeddings for the latent stages\n"
               "# (model.tie_on_init, which one config cannot do either: here every stage is tied)"
               if recipe.cot_untied and recipe.tie_embeddings else "")
            + ". First write the data:\n"
            f"#   {data_cmd}\n"
            "# Run:  ivtlr train configs/demo-cpu.yaml\n")
    return head + yaml.safe_dump({s: v for s, v in body.items() if v}, sort_keys=False)


def command_line(label: str, backbone: str, seed: int, overrides: dict) -> str:
    parts = ["ivtlr demo"] + (["--quick"] if label == "quick" else [])
    parts += [f"--backbone {backbone}"] if backbone != "qwen2-vl" else []
    parts += [f"--seed {seed}"] if seed else []
    for k, v in overrides.items():
        flag = k.replace("_", "-")
        parts.append(f"--{flag}" if v is True else f"--no-{flag}" if v is False else f"--{flag} {v}")
    return " ".join(parts)


def run_demo(recipe: DemoRecipe, out: Path, backbone: str, seed: int, threads: int, label: str,
             eval_only: bool = False, overrides: dict | None = None, overwrite: bool = False) -> int:
    cores = usable_cores()
    threads = threads or (1 if cores <= 2 else min(8, cores // 2))
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    phases: dict[str, float] = {}  # wall seconds of each part of this run, in order (results.json's meta)

    def mark(name: str) -> None:  # the part that has just ended: the time since the previous one ended
        phases[name] = time.perf_counter() - t_start - sum(phases.values())

    data = out / "data"
    if eval_only:
        if not (out / "results.json").is_file():
            raise SystemExit(f"--eval-only: no finished demo in {out}")
        timings = json.loads((out / "results.json").read_text())["meta"]["train_seconds"]
    else:
        if out.exists() and any(out.iterdir()):
            if not overwrite:
                raise SystemExit(f"{out} already holds a demo run: re-score it with --eval-only, replace it with "
                                 "--overwrite (deletes it), or choose another --out")
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        print(f"[1/5] synthetic benchmark: {recipe.n_train} train / {recipe.n_test} test questions -> {data}",
              flush=True)
        write_benchmark(recipe, data, seed)
        mark("data")
        timings = train_all(recipe, data, out, backbone, seed, threads)
        mark("training")
    torch.set_num_threads(max(threads, min(2, cores)))
    print("[4/5] evaluation on the test split", flush=True)
    stages = stage_checkpoints(out / "ivtlr")
    checkpoints = {"stage0": stage_checkpoints(out / "cot")[0], "final": stages[recipe.max_latent_stage],
                   "nocot": stage_checkpoints(out / "nocot")[0],
                   **{f"stage_{s}": p for s, p in stages.items()}}
    if recipe.authors:
        checkpoints["authors"] = stage_checkpoints(out / "authors")[recipe.max_latent_stage]
    ev = Evaluator(checkpoints, data, recipe.n_test, batch_size=recipe.eval_batch_size,
                   latency_rounds=recipe.latency_rounds, latency_questions=recipe.latency_questions)
    for row in demo_rows(recipe):
        ev.run(row)
    mark("evaluation")
    print(f"  timing: {ev.latency_rounds} batch-1 rounds, every mode in turn on each block of "
          f"{ev.latency_block} questions", flush=True)
    ev.retime()
    mark("latency")
    ev.results[f"stage_{recipe.max_latent_stage}"] = {**ev.results["ivtlr"], "key": f"stage_{recipe.max_latent_stage}"}
    print("[5/5] diagnostics of the final model (ivtlr analyze)", flush=True)
    final = ev.inference("final")

    train = list(get_task("synth").load(str(data), "train"))[:1000]
    analysis = run_analysis(AnalysisInputs(final, ev.examples, train, recipe.max_latent_stage,
                                           cot=ev.inference("stage0"), batch_size=recipe.eval_batch_size),
                            progress=lambda m: print("  " + m, flush=True))
    write_analysis(out / "analysis", analysis)
    mark("analysis")
    wall = time.perf_counter() - t_start
    if eval_only:  # the training of the earlier run plus this evaluation
        wall += timings["cot"] + timings.get("ivtlr", 0)
    chance = sum(1 / len(ex.choices) for ex in ev.examples) / len(ev.examples)
    kinds = sorted({ex.topic for ex in ev.examples})
    meta = {
        "label": label, "chance": chance,
        "chance_by_kind": {k: sum(1 / len(e.choices) for e in ev.examples if e.topic == k)
                           / sum(e.topic == k for e in ev.examples) for k in kinds},
        "judge": final.task.judge_names[0], "seed": seed, "backbone": backbone, "threads": threads,
        "machine": f"{platform.machine()} ({describe_cpu()}), {os.cpu_count()} cores, torch {torch.__version__}",
        "recipe": dataclasses.asdict(recipe), "train_seconds": timings, "wall_seconds": wall, "phase_seconds": phases,
        "evaluation_rerun": eval_only, "command": command_line(label, backbone, seed, overrides or {}),
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": ev.results}, indent=2))
    report = write_report(out, meta, ev.results, analysis)
    print(f"done in {wall / 60:.1f} min: {report}", flush=True)
    return 0
