"""``ivtlr experiments``: the measured experiments behind docs/latent-reasoning.md, each a short run of the
package's own commands (``ivtlr data synth``, ``ivtlr train``, ``ivtlr eval``, ``ivtlr analyze``).

    ivtlr experiments list                      # the experiments, the question each answers
    ivtlr experiments run NAME [NAME ...]       # run them (two at a time on two cores); results cached
    ivtlr experiments docs                      # rewrite docs/latent-reasoning.md from docs/experiments/*.json

Four kinds of experiment:

- stage 0 (chain-of-thought) from scratch on one benchmark design: validation every ``val_every`` steps traces
  when each rationale step is learnt (exact match per written step), then the test accuracy per kind;
- latent stages 1-3 fine-tuned from the final checkpoint of a stage-0 experiment (``latent_from``): accuracy
  per stage on the test split (each stage with its own latents) and ``ivtlr analyze`` on the final model;
- a whole ``ivtlr demo`` (its default recipe and seed, or the recipe with flags changed), the base of:
- recipe experiments: the demo's own latent training (``<demo>/ivtlr/config.yaml``, model selection on the
  validation split included) again from the demo's stage-0 checkpoint, with one thing changed; figures as for
  the latent stages, plus the optimizer steps the latent stages took.

Every run writes ``runs/experiments/<name>/`` (data, checkpoints, logs) and a summary
``docs/experiments/<name>.json`` (figures plus the exact commands), which the docs page is rendered from.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import stage_checkpoints
from .report import targets


ROOT = Path("runs/experiments")
DOCS = Path("docs/experiments")
PAGE = Path("docs/latent-reasoning.md")

#: the tiny model and optimiser every experiment starts from (the demo's sizes); experiments override keys
BASE_TRAIN = {
    "model.tiny_hidden": 128, "model.tiny_layers": 4, "model.tiny_heads": 4, "model.tiny_vocab": 600,
    "model.tiny_tie_embeddings": True, "optim.lr": 1e-3, "optim.batch_size": 16, "optim.schedule": "constant",
    "optim.warmup_steps": 50, "data.val_size": 100, "run.keep_last": 10, "latent.k": 1,
}
#: the demo's benchmark design (docs/latent-reasoning.md says how it was found)
BASE_SYNTH = {"fixed_options": True, "step_style": "pairs", "palette": "wheel", "dot_style": "quadrant",
              "kinds": "dot-colour"}


@dataclass(frozen=True)
class Experiment:
    """One measured run. ``train`` and ``synth`` are overrides of BASE_TRAIN and BASE_SYNTH."""

    name: str
    group: str
    question: str
    synth: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    latent_from: str | None = None
    """A stage-0 experiment whose final checkpoint (and data) the latent stages start from; for a recipe
    experiment, the demo experiment whose latent training it repeats."""
    demo_flags: tuple[str, ...] = ()
    """A demo experiment's flags beyond ``--seed`` and ``--out``."""
    seed: int = 0
    n_train: int = 5000
    n_test: int = 300

    @property
    def is_latent(self) -> bool:
        return self.latent_from is not None


def _stage0(name, question, synth=None, epochs=4, **train):
    return Experiment(name, "stage0", question, synth=synth or {},
                      train={"curriculum.max_latent_stage": 0, "curriculum.cot_epochs": epochs,
                             "run.val_every": 100, **train})


#: the demo's latent recipe; latent experiments change one thing each
LATENT = {"curriculum.first_stage": 1, "curriculum.max_latent_stage": 3, "curriculum.stage_epochs": [1, 1, 3],
          "curriculum.stage_mix_prob": 0.5, "latent.latent_grad": "detach", "latent.feedback_norm": "none",
          "data.val_size": 0}


def _latent(name, question, base="s0-demo", **train):
    return Experiment(name, "latent", question, latent_from=base, train={**LATENT, **train})


#: demo runs recorded before stage 0's extra epochs (``DemoRecipe.cot_extra_epochs``) entered the recipe, whose
#: stage 0 ended its 6 epochs below 75% on validation: today's recipe would train it on, so their commands say so
BEFORE_COT_EXTRA = ("--cot-extra-epochs", "0")


#: demo runs recorded before stage 0 was untied by default (``DemoRecipe.cot_untied``) trained a tied stage 0: their
#: commands say so
STAGE0_TIED = ("--no-cot-untied",)


def _demo(name, question, seed=0, *flags):
    return Experiment(name, "demo", question, seed=seed, demo_flags=tuple(flags))


def _recipe(name, question, base="demo-s0", **train):
    return Experiment(name, "recipe", question, latent_from=base, train=train)


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    _stage0("s0-demo", "The demo's design: wheel colours, quadrant dots, 'pairs' steps, dot-colour only, tied "
            "embeddings. When is each step learnt?"),
    _stage0("s0-untied", "The same with an output head of its own (untied embeddings).",
            **{"model.tiny_tie_embeddings": False}),
    _stage0("s0-content-first", "Steps that open with the colour they read ('blue dot in the red cell') instead "
            "of 'pairs' ('red blue, the red cell has a blue dot').", {"step_style": "content_first"}),
    _stage0("s0-template", "The previous demo's wording: every step opens with 'The'.", {"step_style": "template"}),
    _stage0("s0-classic", "The previous demo's board: classic palette, small centred dots.",
            {"palette": "classic", "dot_style": "small"}),
    _stage0("s0-all-kinds", "All three kinds (dot-colour, dot-count, dot-match), as the previous demo.",
            {"kinds": "dot-colour,dot-count,dot-match"}),
    _latent("lat-demo", "The demo's recipe: the authors' latent semantics (detached latents, raw states), stage "
            "mixing 0.5, K=1, epochs 1/1/3."),
    _latent("lat-authors", "The authors' schedule too: no stage mixing, one epoch per stage.",
            **{"curriculum.stage_mix_prob": 0.0, "curriculum.stage_epochs": [1, 1, 1]}),
    _latent("lat-full", "The recipe with the full gradient through the latent chain.",
            **{"latent.latent_grad": "full"}),
    _latent("lat-nomix", "The recipe without stage mixing.", **{"curriculum.stage_mix_prob": 0.0}),
    _latent("lat-norm", "The recipe with fed-back states rescaled to the token embeddings' norm.",
            **{"latent.feedback_norm": "embedding"}),
    _latent("lat-k2", "K=2 image tokens per latent step (K x 3 = 6 of the board's 9).", **{"latent.k": 2}),
    _latent("lat-epochs111", "One epoch per latent stage (313 optimizer steps each).",
            **{"curriculum.stage_epochs": [1, 1, 1]}),
    _demo("demo-s0", "The demo's default recipe of its day (stage 0 tied), seed 0: the base of the recipe "
          "experiments below.", 0, *STAGE0_TIED),
    _demo("demo-hops3", "Questions of 3 hops: the middle rationale step reads two cells, so latent step 2 has to do "
          "two reads.", 0, "--hops", "3", *STAGE0_TIED),
    _demo("demo-hops3-per-read", "Questions of 3 hops with one rationale step per read (4 steps, 4 latent stages): "
          "does every latent step carry its read when none has to do two?", 0, "--hops", "3", "--step-per-read",
          *STAGE0_TIED),
    _demo("demo-hops3-per-read-s5", "The same on seed 5 (another benchmark, initialisation and data order).", 5,
          "--hops", "3", "--step-per-read", *STAGE0_TIED),
    _demo("demo-hops4-per-read", "Questions of 4 hops (the longest chain of the 3x3 board), one step per read: 5 "
          "steps, 5 latent stages.", 0, "--hops", "4", "--step-per-read", *STAGE0_TIED),
    _demo("demo-l3", "Model depth: a language model of 3 layers instead of the recipe's 4 (the recipe otherwise).",
          0, "--layers", "3", *STAGE0_TIED),
    _demo("demo-l6", "Model depth: 6 layers instead of 4.", 0, "--layers", "6", *BEFORE_COT_EXTRA, *STAGE0_TIED),
    _demo("demo-h96", "Model width: hidden size 96 instead of 128 (4 heads of 24).", 0, "--hidden", "96", *STAGE0_TIED),
    _demo("demo-h192", "Model width: hidden size 192 instead of 128 (4 heads of 48).", 0, "--hidden", "192",
          *STAGE0_TIED),
    *(_demo(f"demo-h96-s{seed}", f"Hidden size 96 on seed {seed} (run as `ivtlr demo --seed {seed}` from a clean "
            "clone of commit 29a628b, which made 96 the default: the same configuration as this command).", seed,
            "--hidden", "96", *(BEFORE_COT_EXTRA if seed in (3, 4) else ()), *STAGE0_TIED) for seed in (1, 2, 3, 4, 5)),
    _demo("demo-h96-s6", "Hidden size 96 on seed 6, the longest run of the default recipe (18.6 min: every epoch "
          "cap and both overtime epochs): is the narrower model faster where it matters?", 6, "--hidden", "96",
          *STAGE0_TIED),
    _demo("demo-h96-s10", "Hidden size 96 on seed 10 (the recipe's run: 17.1 min, stage 0 to its 6th epoch).", 10,
          "--hidden", "96", *STAGE0_TIED),
    _demo("demo-h96-s14", "Hidden size 96 on seed 14 (the recipe's run: 19.1 min, in a slow hour of the machine).",
          14, "--hidden", "96", *STAGE0_TIED),
    *(_demo(f"demo-h96-cot8-s{seed}", f"Hidden size 96 on seed {seed}, whose stage 0 began to read the board only "
            "at its 6-epoch cap: with a cap of 8 epochs, does it learn to read, and do the targets hold?", seed,
            "--hidden", "96", "--cot-epochs", "8", *STAGE0_TIED) for seed in (3, 4)),
    *(_demo(f"demo-h96-cot8-s{seed}", f"Hidden size 96 with a stage-0 cap of 8 epochs on seed {seed}, whose stage 0 "
            "ran to the cap of 6 and passed: does the longer cap change it?", seed, "--hidden", "96", "--cot-epochs",
            "8", *STAGE0_TIED)
      for seed in (2, 5)),
    _demo("demo-h96-cot8-s7", "Hidden size 96 with a stage-0 cap of 8 epochs on seed 7, which hidden 96 had not been "
          "run on: do the targets hold on a new seed?", 7, "--hidden", "96", "--cot-epochs", "8", *STAGE0_TIED),
    *(_demo(f"demo-h96-cot8-s{seed}", f"Hidden size 96 with a stage-0 cap of 8 epochs on seed {seed}, one of the five "
            "published seeds it had not run on: do the targets hold on every seed before it becomes the default?",
            seed, "--hidden", "96", "--cot-epochs", "8", *STAGE0_TIED) for seed in (8, 9, 11, 12, 13)),
    _demo("demo-h112-s6", "Hidden size 112 (4 heads of 28), between the recipe's 128 and 96, on seed 6, the recipe's "
          "longest run (18.6 min): how much faster is it where the 20-minute budget is tightest?", 6,
          "--hidden", "112", *STAGE0_TIED),
    _demo("demo-img168", "Board size in image tokens: the same 3x3 board drawn at 168 px, so every cell is 2x2 image "
          "tokens (36 in all, K x 3 = 3 of them) and its quadrant dot exactly one: does the top-K become a bottleneck "
          "that latent vision's content has to carry?", 0, "--image-size", "168", *BEFORE_COT_EXTRA, *STAGE0_TIED),
    _demo("demo-img168-large", "The same 168 px board with large centred dots, so that each of a cell's 2x2 image "
          "tokens shows its fill and part of its dot (with quadrant dots, the dot's token shows no fill).", 0,
          "--image-size", "168", "--dot-style", "large", *STAGE0_TIED),
    _demo("demo-s29-no-extra", "Seed 29, whose stage 0 validated 56.0% at best by the end of its 6 epochs (the only "
          "one of seeds 18-29 below 75%; scripts/stage0_scan.py), without the recipe's extra stage-0 epochs: what "
          "does a stage 0 that has not learnt to read cost the targets?", 29, *BEFORE_COT_EXTRA, *STAGE0_TIED),
    _demo("demo-untied", "Untied embeddings (an output head of its own) on seed 0, on a CPU where the tied stage 0 "
          "of seed 0 cannot find two colours' cells (71.5% at best), while the untied stage 0 alone reads every colour "
          "by step 1,099 (scripts/stage0_scan.py): does the whole demo then meet the targets?", 0,
          "--no-tie-embeddings"),
    *(_demo("demo-cot-untied" + (f"-s{seed}" if seed else ""), "Stage 0 untied, the latent stages tied "
            f"(--cot-untied) on seed {seed}, whose tied stage 0 plateaus on the CPU of 2026-12-07 afternoon (one or "
            "two colours not found), while stage 0 untied learns every colour and latent stages tied from it reached "
            "100% (scripts/tie_stage0.py): do the targets hold through the demo itself, and in what time?", seed,
            "--cot-untied") for seed in (0, 25)),
    _recipe("rec-control", "Nothing changed: the demo's latent training again, on one thread beside another "
            "experiment (the demo's own used two): how far the figures move without a change.", ),
    _recipe("rec-k2", "K=2 image tokens per latent step (K x 3 = 6 of the board's 9).", **{"latent.k": 2}),
    _recipe("rec-k3", "K=3: the three latent steps re-insert 9 tokens, as many as the board has (the previous "
            "demo's K).", **{"latent.k": 3}),
    _recipe("rec-keep-optim", "The optimizer's state kept from stage to stage (the recipe resets it at each stage "
            "start, as Coconut and the authors).", **{"curriculum.reset_optimizer": False}),
    _recipe("rec-lr5e-4", "Half the learning rate in the latent stages (5e-4 instead of stage 0's 1e-3).",
            **{"optim.lr": 5e-4}),
    _recipe("rec-nomix", "No stage mixing (the authors' curriculum: every sample of stage s has s latent steps).",
            **{"curriculum.stage_mix_prob": 0.0}),
    _recipe("rec-state-drop", "Fed-back states dropped (zeroed) for half the samples at each latent step in "
            "training (latent.state_dropout 0.5, outside the method): does the next step then read the re-inserted "
            "image tokens, so that random patches hurt?", **{"latent.state_dropout": 0.5}),
    _recipe("rec-full", "The full gradient through the latent chain instead of the authors' detached states.",
            **{"latent.latent_grad": "full"}),
]}


# ------------------------------------------------------------------------------------------------ running
def _flags(overrides: dict) -> list[str]:
    out = []
    for key, value in overrides.items():
        if isinstance(value, bool):
            out.append(f"--{key}" if value else f"--no-{key}")
        elif isinstance(value, (list, tuple)):
            out += [f"--{key}", *map(str, value)]
        else:
            out += [f"--{key}", str(value)]
    return out


def data_command(exp: Experiment, out: Path) -> list[str]:
    synth = {**BASE_SYNTH, **exp.synth}
    flags = []
    for key, value in synth.items():
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [f"--no-{key.replace('_', '-')}"] if value is False else [flag, str(value)]
    return ["ivtlr", "data", "synth", "--out", str(out), "--n-train", str(exp.n_train), "--n-test", str(exp.n_test),
            "--seed", str(exp.seed), *flags]


def commands(exp: Experiment) -> list[list[str]]:
    """The shell commands of one experiment, in order (what its docs entry prints)."""
    run = ROOT / exp.name
    if exp.group == "demo":
        return [["ivtlr", "demo", "--seed", str(exp.seed), *exp.demo_flags, "--out", str(run / "demo")]]
    if exp.group == "recipe":
        base = ROOT / exp.latent_from / "demo"
        return [["ivtlr", "train", str(base / "ivtlr" / "config.yaml"),
                 *_flags({**exp.train, "run.out_dir": str(run / "run")})],
                *_evaluations(exp.name, f"$(ivtlr experiments checkpoint {exp.latent_from} 0)",
                              ["--data", str(base / "data")], latent_stages(exp))]
    if exp.is_latent:
        base = EXPERIMENTS[exp.latent_from]
        data = ROOT / base.name / "data"
        init = f"$(ivtlr experiments checkpoint {base.name} 0)"
        return [["ivtlr", "train", *_flags({**BASE_TRAIN, "data.source": str(data), "optim.seed": exp.seed,
                                            **exp.train, "run.out_dir": str(run / "run")}), "--model.init_from", init],
                *_evaluations(exp.name, init, stages=latent_stages(exp))]
    data = run / "data"
    return [data_command(exp, data),
            ["ivtlr", "train", *_flags({**BASE_TRAIN, "data.source": str(data), "optim.seed": exp.seed, **exp.train,
                                        "run.out_dir": str(run / "run")})],
            ["ivtlr", "eval", "--checkpoint", f"$(ivtlr experiments checkpoint {exp.name} 0)", "--mode", "cot",
             "--out", str(run / "eval-cot")]]


def _evaluations(name: str, cot: str, data: list[str] = (), stages: int = 3) -> list[list[str]]:
    """A latent run's evaluations: each of its ``stages`` stages' checkpoints with its own latents, then ``ivtlr
    analyze`` of the last against the stage-0 (chain-of-thought) checkpoint ``cot``."""
    run = ROOT / name
    cmds = [["ivtlr", "eval", "--checkpoint", f"$(ivtlr experiments checkpoint {name} {s})", "--latents", str(s),
             "--max-new-tokens", "16" if s == stages else "128", *data, "--out", str(run / f"eval-stage{s}")]
            for s in range(1, stages + 1)]
    return cmds + [["ivtlr", "analyze", "--checkpoint", f"$(ivtlr experiments checkpoint {name} {stages})",
                    "--cot-checkpoint", cot, *data, "--out", str(run / "analysis")]]


def latent_stages(exp: Experiment) -> int:
    """How many latent stages an experiment trains: its own override, else (a recipe experiment) those of the
    demo it repeats, as that demo's flags set them, else the latent recipe's."""
    if "curriculum.max_latent_stage" in exp.train:
        return int(exp.train["curriculum.max_latent_stage"])
    if exp.group == "recipe":
        from .demo import build_parser, recipe_from_args

        parser = build_parser()
        base = EXPERIMENTS[exp.latent_from]
        return recipe_from_args(parser.parse_args(list(base.demo_flags)), parser)[0].max_latent_stage
    return int(LATENT["curriculum.max_latent_stage"])


def checkpoint(name: str, stage: int) -> Path:
    """The stage-end checkpoint of an experiment's run (a demo's: stage 0 in cot/, the latent stages in ivtlr/)."""
    part = "run" if EXPERIMENTS[name].group != "demo" else "demo/cot" if stage == 0 else "demo/ivtlr"
    folder = ROOT / name / part
    found = stage_checkpoints(folder)
    if stage not in found:
        raise SystemExit(f"experiment {name!r} has no stage-{stage} checkpoint in {folder} (run it first)")
    return found[stage]


def _shell(cmd: list[str]) -> str:
    return " ".join(c if c.startswith("$(") else shlex.quote(c) for c in cmd)


def shell_commands(exp: Experiment) -> list[str]:
    """``commands(exp)`` as the shell lines its record and its docs entry quote."""
    return [_shell(c) for c in commands(exp)]


def command_env(threads: int) -> dict[str, str]:
    """The environment of an experiment's commands: ``threads`` torch threads, and the ``ivtlr`` of this
    interpreter's environment first on the PATH (whether or not that environment is activated)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def run_experiment(exp: Experiment, threads: int = 1) -> dict:
    """Run one experiment's commands (skipping finished ones) and write its summary JSON."""
    run = ROOT / exp.name
    if exp.is_latent and not (ROOT / exp.latent_from / "done").is_file():
        raise SystemExit(f"{exp.name}: run its stage-0 experiment {exp.latent_from!r} first")
    run.mkdir(parents=True, exist_ok=True)
    env = command_env(threads)
    t0 = time.perf_counter()
    with (run / "log.txt").open("a") as log:
        for cmd in commands(exp):
            out_flag = next((cmd[i + 1] for i, c in enumerate(cmd) if c in ("--out", "--run.out_dir")), None)
            if out_flag and Path(out_flag).exists() and (cmd[1] != "train" or (run / "trained").is_file()):
                if cmd[1] != "demo" or (Path(out_flag) / "results.json").is_file():
                    continue  # finished earlier
                cmd = [*cmd, "--overwrite"]  # a demo cut short: it starts again
            if out_flag and cmd[1] == "train" and Path(out_flag).exists():
                cmd = [*cmd, "--run.resume"]  # interrupted earlier: continue it, never start over on top of it
            line = _shell(cmd)
            log.write(f"$ {line}\n")
            log.flush()
            done = subprocess.run(["bash", "-c", line], stdout=log, stderr=subprocess.STDOUT, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"{exp.name}: `{line}` failed (exit {done.returncode}); see {run / 'log.txt'}")
            if cmd[1] == "train":
                (run / "trained").write_text("")
    summary = summarise(exp)
    summary.setdefault("wall_seconds", time.perf_counter() - t0)  # a demo's own wall time when it ran earlier
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / f"{exp.name}.json").write_text(json.dumps(summary, indent=2))
    (run / "done").write_text("")
    return summary


def _eval_summary(folder: Path) -> dict:
    s = json.loads((folder / "summary.json").read_text())
    judge = next(iter(s["accuracy"]))
    return {"accuracy": s["accuracy"][judge], "judge": judge, "ar_steps": s["ar_steps"],
            "by_kind": {k.split("/")[-1]: v[judge]["accuracy"] for k, v in s["report"]["groups"].get("topic", {}).items()}}


def summarise(exp: Experiment) -> dict:
    """The figures of a finished experiment (from its metrics.jsonl, eval summaries and analysis)."""
    run = ROOT / exp.name
    latent_run = run / "demo" / "ivtlr" if exp.group == "demo" else run / "run"
    rows = [json.loads(line) for line in (latent_run / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "loss" in r]
    out = {"name": exp.name, "group": exp.group, "question": exp.question, "commands": shell_commands(exp),
           "steps": len(losses), "final_loss": sum(r["loss"] for r in losses[-50:]) / max(1, len(losses[-50:])),
           "validation": [[r["step"], r["stage"], r["val_accuracy"]] for r in rows if "val_accuracy" in r]}
    if exp.group == "demo":
        results = json.loads((run / "demo" / "results.json").read_text())
        judge, out["wall_seconds"] = results["meta"]["judge"], results["meta"]["wall_seconds"]
        stages = sorted(int(k.split("_")[1]) for k in results["results"] if k.startswith("stage_"))
        out["stages"] = {str(s): {"accuracy": results["results"][f"stage_{s}"]["accuracy"][judge], "judge": judge}
                         for s in stages}
        out["demo"] = {k: v["accuracy"][judge] for k, v in results["results"].items()}
        out["latency_ms"] = {k: 1000 * results["results"][k]["latency_s"] for k in ("ivtlr", "cot")}
        met = targets(results["results"], results["meta"])
        out["targets"] = {"met": sum(ok for _, ok, _ in met), "of": len(met),
                          "missed": [name for name, ok, _ in met if not ok]}
        analysis = json.loads((run / "demo" / "analysis" / "analysis.json").read_text())
        out["analysis"] = {k: analysis[k] for k in ("accuracy", "hit_rates", "interventions", "scales", "probes")
                           if k in analysis}
    elif exp.is_latent:
        stages = range(1, latent_stages(exp) + 1)
        out["stages"] = {str(s): _eval_summary(run / f"eval-stage{s}") for s in stages}
        out["loss_by_stage"] = {str(s): [r["loss"] for r in losses if r["stage"] == s][-1] for s in stages}
        analysis = json.loads((run / "analysis" / "analysis.json").read_text())
        out["analysis"] = {k: analysis[k] for k in ("accuracy", "hit_rates", "interventions", "scales", "probes")
                           if k in analysis}
    else:
        out["curve"] = [{"step": r["step"], "accuracy": r["val_accuracy"], "step_match": r.get("val_step_match", [])}
                        for r in rows if "val_accuracy" in r]
        out["cot"] = _eval_summary(run / "eval-cot")
        out["learnt_at"] = learnt_at(out["curve"])
    return out


def learnt_at(curve: list[dict], level: float = 0.9) -> list[int | None]:
    """Per rationale step, the first validation step at which its exact match reached ``level``."""
    n = max((len(c["step_match"]) for c in curve), default=0)
    return [next((c["step"] for c in curve if len(c["step_match"]) > j and c["step_match"][j] >= level), None)
            for j in range(n)]


# ------------------------------------------------------------------------------------------------ docs page
_BEGIN, _END = "<!-- experiments:begin -->", "<!-- experiments:end -->"


def _analysis_cells(summary: dict, pct) -> str:
    """'hit rates | h zeroed | random patches |' of one experiment's final model."""
    a = summary.get("analysis", {})
    hr = a.get("hit_rates", {}).get("by_step", [])
    hits = " / ".join(pct(hr[t][t]) for t in range(len(hr))) if hr else "-"  # every latent step
    iv = a.get("interventions", {})
    return f"{hits} | {pct(iv.get('h_zero', {}).get('all'))} | {pct(iv.get('vision_random', {}).get('all'))} |"


def _latency_cell(summary: dict) -> str:
    ms = summary.get("latency_ms")
    return f"{ms['ivtlr']:.1f} vs {ms['cot']:.1f} ({ms['ivtlr'] / ms['cot']:.3f}x)" if ms else "-"


def _targets_cell(summary: dict) -> str:
    t = summary.get("targets")
    if not t:
        return "-"
    missed = [name.split(":")[0] for name in t["missed"]]  # the target's name, without its threshold
    return f"{t['met']} of {t['of']}" + (f" (missed: {'; '.join(missed)})" if missed else "")


def render_tables(summaries: list[dict]) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    parts = []
    stage0 = [s for s in summaries if s["group"] == "stage0"]
    if stage0:
        parts += ["### Stage 0: when each rationale step is learnt", "",
                  "Validation exact match of each written step reaches 90% at optimizer step (- = never); then the "
                  "test accuracy of the final stage-0 model, overall and per kind.", "",
                  "| experiment | question | step 1 | step 2 | step 3 | CoT accuracy | per kind | steps |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in stage0:
            la = s["learnt_at"] + [None] * (3 - len(s["learnt_at"]))
            kinds = ", ".join(f"{k} {pct(v)}" for k, v in sorted(s["cot"]["by_kind"].items()))
            parts.append(f"| `{s['name']}` | {s['question']} | " + " | ".join("-" if v is None else str(v) for v in la[:3])
                         + f" | {pct(s['cot']['accuracy'])} | {kinds} | {s['steps']} |")
        parts.append("")
    latent = [s for s in summaries if s["group"] == "latent"]
    if latent:
        parts += ["### Latent stages from a shared stage-0 checkpoint", "",
                  "Test accuracy of each stage's model with its own latents; hit rate of latent step t on the cell "
                  "rationale step t reads; accuracy with every fed-back state zeroed / latent vision random.", "",
                  "| experiment | question | stage 1 | stage 2 | stage 3 | hit rate step 1 / 2 / 3 | h zeroed | "
                  "random patches |", "|---|---|---|---|---|---|---|---|"]
        for s in latent:
            parts.append(f"| `{s['name']}` | {s['question']} | " + " | ".join(pct(s["stages"][k]["accuracy"])
                         for k in ("1", "2", "3")) + " | " + _analysis_cells(s, pct))
        parts.append("")
    recipe = [s for s in summaries if s["group"] in ("demo", "recipe")]
    if recipe:
        parts += ["### The demo's recipe with one thing changed", "",
                  "`demo-*`: a whole `ivtlr demo` (the default recipe, or with the flags in its commands). `rec-*`: "
                  "the demo's own latent training (model selection on the validation split included) again from "
                  "the stage-0 checkpoint of `demo-s0`, one setting changed. Test accuracy of each stage's model "
                  "with its own latents; the optimizer steps the latent stages took (each ends at two perfect "
                  "validations in a row, else after its epochs); hit rate of latent step t on the cell rationale "
                  "step t reads; accuracy with every fed-back state zeroed / latent vision random.", "",
                  "| experiment | question | stages 1 / 2 / ... | latent steps | last stage's validations | "
                  "hit rate step 1 / 2 / ... | h zeroed | random patches |", "|---|---|---|---|---|---|---|---|"]
        for s in recipe:
            stages = " / ".join(pct(s["stages"][k]["accuracy"]) for k in sorted(s["stages"], key=int))
            last = max(int(k) for k in s["stages"])
            val = " / ".join("100" if a == 1 else f"{100 * a:.1f}" for _, stage, a in s.get("validation", [])
                             if stage == last) or "-"  # 99.8 is not 100: a stage ends only at 100
            parts.append(f"| `{s['name']}` | {s['question']} | {stages} | {s['steps']} | {val} | "
                         + _analysis_cells(s, pct))
        parts.append("")
    demos = [s for s in summaries if s["group"] == "demo" and "demo" in s]
    if demos:
        rows = ("cot", "ivtlr", "nocot", "no_latent_text", "no_latent_vision", "no_latent_part", "random_patches")
        parts += ["### Whole demos: the headline figures", "",
                  "Test accuracy of each `demo-*` run's report (its headline judge), its time per question at "
                  "batch 1 (IVT-LR against CoT, and their ratio), the report's targets it meets (those it misses), "
                  "and its wall time on this machine (- where a record predates the column).", "",
                  "| experiment | CoT | IVT-LR | No-CoT | no latent text | no latent vision | no latent part | "
                  "random patches | ms/question | targets met | wall (min) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in demos:
            parts.append(f"| `{s['name']}` | " + " | ".join(pct(s["demo"].get(r)) for r in rows)
                         + f" | {_latency_cell(s)} | {_targets_cell(s)} | {s.get('wall_seconds', 0) / 60:.1f} |")
        parts.append("")
    parts += ["### Commands", ""]
    for s in summaries:
        parts += [f"`{s['name']}` ({s['steps']} optimizer steps, {s.get('wall_seconds', 0) / 60:.0f} min):", "",
                  "```bash", *s["commands"], "```", ""]
    return "\n".join(parts)


def write_docs(page: Path = PAGE) -> Path:
    summaries = [json.loads((DOCS / f"{name}.json").read_text()) for name in EXPERIMENTS
                 if (DOCS / f"{name}.json").is_file()]
    text = page.read_text()
    if _BEGIN not in text or _END not in text:
        raise SystemExit(f"{page} lacks the markers {_BEGIN} ... {_END}")
    head, rest = text.split(_BEGIN, 1)
    page.write_text(f"{head}{_BEGIN}\n{render_tables(summaries)}\n{_END}{rest.split(_END, 1)[1]}")
    return page


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ivtlr experiments", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    r = sub.add_parser("run")
    r.add_argument("names", nargs="+")
    r.add_argument("--jobs", type=int, default=2, help="experiments at a time (one core each)")
    c = sub.add_parser("checkpoint", help="print the stage-end checkpoint of an experiment")
    c.add_argument("name")
    c.add_argument("stage", type=int)
    sub.add_parser("docs")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for e in EXPERIMENTS.values():
            print(f"{e.name:<24} {e.group:<7} {e.question}")
        return 0
    if args.cmd == "checkpoint":
        print(checkpoint(args.name, args.stage))
        return 0
    if args.cmd == "docs":
        print(f"wrote {write_docs()}")
        return 0
    unknown = [n for n in args.names if n not in EXPERIMENTS]
    if unknown:
        p.error(f"unknown experiments {unknown}; see `ivtlr experiments list`")
    exps = [EXPERIMENTS[n] for n in args.names]
    stage0 = [e for e in exps if not e.is_latent]
    latent = [e for e in exps if e.is_latent]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for batch in (stage0, latent):  # a latent experiment needs its stage-0 experiment finished
            for summary in pool.map(run_experiment, batch):
                print(f"{summary['name']}: done ({summary['steps']} steps)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
