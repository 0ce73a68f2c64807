"""``ivtlr demo``: the paper's tables in miniature, on a CPU, from nothing.

1. generates the synthetic visual multi-step benchmark (``ivtlr data synth``);
2. trains a tiny VLM from scratch twice: the No-CoT baseline (answer directly) and the IVT-LR curriculum
   (stage 0 = chain-of-thought, stages 1-3 = 1-3 latent steps), keeping every stage's checkpoint;
3. evaluates every mode on the test split: IVT-LR, CoT (the stage-0 model writes its rationale), No-CoT, a blind
   baseline (images replaced by gray), the three ablations (no latent text, no latent vision, no latent part),
   accuracy per stage and per K;
4. writes ``<out>/report.md`` (tables) and PNG plots.

``--quick`` runs a few-minute version (the test suite runs it end to end); the full size is the README's main
command. Every figure in the report comes from this run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch


@dataclass
class DemoSize:
    n_train: int
    n_test: int
    cot_epochs: int  # stage 0 (chain-of-thought)
    epochs_per_stage: int  # each latent stage
    nocot_epochs: int
    hidden: int
    layers: int
    batch_size: int
    lr: float
    k: int = 3  # of the 9 image tokens of a 3x3 board; K x 3 steps <= 9
    latent_grad: str = "detach"  # the authors' choice; "full" backpropagates through the fed-back states


SIZES = {
    "full": DemoSize(n_train=5000, n_test=300, cot_epochs=6, epochs_per_stage=1, nocot_epochs=6, hidden=128,
                     layers=4, batch_size=16, lr=1e-3),
    "quick": DemoSize(n_train=96, n_test=24, cot_epochs=1, epochs_per_stage=1, nocot_epochs=1, hidden=32, layers=2,
                      batch_size=8, lr=3e-3),
}


def train_config(size: DemoSize, data: Path, out: Path, backbone: str, no_cot: bool, seed: int):
    from .config import TrainConfig

    cfg = TrainConfig()
    cfg.model = replace(cfg.model, backbone=backbone, tiny_hidden=size.hidden, tiny_layers=size.layers,
                        tiny_heads=4 if size.hidden >= 64 else 2, tiny_vocab=400)
    cfg.data = replace(cfg.data, task="synth", source=str(data), val_size=0)
    cfg.curriculum = replace(cfg.curriculum, epochs_per_stage=size.nocot_epochs if no_cot else size.epochs_per_stage,
                             cot_epochs=None if no_cot else size.cot_epochs, max_latent_stage=3, no_cot=no_cot)
    cfg.optim = replace(cfg.optim, lr=size.lr, batch_size=size.batch_size, schedule="cosine", warmup_steps=50,
                        seed=seed)
    cfg.run = replace(cfg.run, out_dir=str(out), keep_last=10, progress=True)
    cfg.latent = replace(cfg.latent, k=size.k, latent_grad=size.latent_grad)
    return cfg


def stage_checkpoints(run: Path) -> dict[int, Path]:
    from .checkpoint import list_checkpoints, read_meta

    out = {}
    for path in list_checkpoints(run):
        tag = read_meta(path)["tag"]
        if tag.startswith("stage-") and tag.endswith("-end"):
            out[int(tag.split("-")[1])] = path
    return out


class Evaluator:
    """Loads checkpoints and runs the evaluation modes on one test set."""

    def __init__(self, data: Path, n_test: int, batch_size: int):
        from .tasks import get_task

        self.task = get_task("synth")
        self.examples = list(self.task.load(str(data), "test"))[:n_test]
        self.batch_size = batch_size
        self.results: list[dict] = []

    def run(self, checkpoint: Path, name: str, n_latents: int, max_new_tokens: int, blind: bool = False, **latent):
        from .backbones import backbone_for
        from .engine import LatentEngine
        from .evaluate import blind as blinded, run_eval
        from .loading import load_model
        from .setup import prompt_encoder, token_ids

        model, tokenizer, cfg = load_model(checkpoint)
        engine = LatentEngine(backbone_for(model, token_ids(tokenizer, cfg.model.backbone)), replace(cfg.latent, **latent))
        encoder = prompt_encoder(cfg.model.backbone, tokenizer, cfg.model.image_size)
        examples = [blinded(ex) for ex in self.examples] if blind else self.examples
        t0 = time.perf_counter()
        res = run_eval(engine, encoder, self.task, examples, n_latents, max_new_tokens, self.batch_size, name=name)
        summary = res.summary
        acc = summary["accuracy"]["official"]
        print(f"  {name:<34} accuracy {100 * acc:5.1f}%  AR steps {summary['ar_steps']:6.1f}  "
              f"{1000 * summary['latency_s']:7.1f} ms/question  ({time.perf_counter() - t0:.0f} s)", flush=True)
        self.results.append(summary)
        return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ivtlr demo", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few-minute version (tests run it)")
    parser.add_argument("--out", default="runs/demo", help="output folder (replaced)")
    parser.add_argument("--backbone", default="qwen2-vl", choices=["qwen2-vl", "qwen2.5-vl", "chameleon"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: 1 per process on <= 2 cores)")
    parser.add_argument("--publish-docs", metavar="DOCS", help="also copy the report to DOCS/results.md and its plots "
                        "to DOCS/img/demo/ (how docs/results.md is made)")
    parser.add_argument("--latent-grad", choices=["detach", "full"], default="detach",
                        help="gradient through the fed-back hidden states (detach: the authors'; full: Coconut's)")
    parser.add_argument("--eval-only", action="store_true", help="re-run only the evaluation and the report on the "
                        "data and checkpoints already in --out (training is deterministic on one thread)")
    args = parser.parse_args(argv)
    size = replace(SIZES["quick" if args.quick else "full"], latent_grad=args.latent_grad)
    code = run_demo(size, Path(args.out), args.backbone, args.seed, args.threads, "quick" if args.quick else "full",
                    eval_only=args.eval_only)
    if args.publish_docs:
        publish(Path(args.out), Path(args.publish_docs))
    return code


def publish(out: Path, docs: Path) -> None:
    """Copy ``out/report.md`` to ``docs/results.md`` (plot links rewritten) and the plots to ``docs/img/demo/``."""
    img = docs / "img" / "demo"
    img.mkdir(parents=True, exist_ok=True)
    text = (out / "report.md").read_text()
    for png in sorted(out.glob("*.png")):
        shutil.copy(png, img / png.name)
        text = text.replace(f"]({png.name})", f"](img/demo/{png.name})")
    (docs / "results.md").write_text(text)
    print(f"published {docs / 'results.md'}")


def run_demo(size: DemoSize, out: Path, backbone: str, seed: int, threads: int, label: str,
             eval_only: bool = False) -> int:
    from .data.synth import generate
    from .report import write_report
    from .train import Trainer

    threads = threads or (1 if (os.cpu_count() or 1) <= 2 else min(8, os.cpu_count() // 2))
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    data = out / "data"
    if eval_only:
        if not (out / "results.json").is_file():
            raise SystemExit(f"--eval-only: no finished demo in {out}")
        timings = json.loads((out / "results.json").read_text())["meta"]["train_seconds"]
    else:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        print(f"[1/4] synthetic benchmark: {size.n_train} train / {size.n_test} test questions -> {data}", flush=True)
        generate(data, n_train=size.n_train, n_test=size.n_test, seed=seed, fixed_options=True)
        # The two trainings run side by side: No-CoT in a child process (log: <out>/nocot.log), IVT-LR here.
        nocot_cfg = train_config(size, data, out / "nocot", backbone, True, seed)
        nocot_cfg.run.progress = False
        nocot_cfg.save(out / "nocot.yaml")
        print(f"[2/4] No-CoT baseline: training a tiny {backbone} from scratch in the background (log: {out / 'nocot.log'})",
              flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        t0 = time.perf_counter()
        with (out / "nocot.log").open("w") as log:
            child = subprocess.Popen([sys.executable, "-m", "ivtlr.cli", "train", str(out / "nocot.yaml")],
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
            print(f"[3/4] IVT-LR curriculum (stage 0 = CoT, stages 1-3 latent): training a tiny {backbone} from scratch",
                  flush=True)
            try:
                Trainer(train_config(size, data, out / "ivtlr", backbone, False, seed)).run()
            except BaseException:
                child.kill()
                raise
            timings = {"ivtlr": time.perf_counter() - t0}
            if child.wait() != 0:
                tail = (out / "nocot.log").read_text()[-2000:]
                raise RuntimeError(f"the No-CoT training failed (exit {child.returncode}):\n{tail}")
            timings["nocot"] = time.perf_counter() - t0
        torch.set_num_threads(max(threads, min(2, os.cpu_count() or 1)))
    print("[4/4] evaluation on the test split", flush=True)
    stages = stage_checkpoints(out / "ivtlr")
    nocot = stage_checkpoints(out / "nocot")[0]
    ev = Evaluator(data, size.n_test, batch_size=32)
    last = stages[3]
    ev.run(last, "IVT-LR (3 latent steps)", 3, 16)
    ev.run(stages[0], "CoT (stage-0 model)", 0, 128)
    ev.run(nocot, "No-CoT", 0, 16)
    ev.run(last, "blind IVT-LR (gray image)", 3, 16, blind=True)
    ev.run(stages[0], "blind CoT (gray image)", 0, 128, blind=True)
    ev.run(last, "ablation: no latent text", 3, 16, latent_text=False)
    ev.run(last, "ablation: no latent vision", 3, 16, latent_vision=False)
    ev.run(last, "ablation: no latent part (n=0)", 0, 16)
    for stage in (1, 2):  # these models still write their last 3 - stage steps: a CoT-sized budget
        ev.run(stages[stage], f"stage {stage} ({stage} latent steps)", stage, 128)
    for k in range(1, size.k):
        ev.run(last, f"IVT-LR K={k}", 3, 16, k=k)
    wall = time.perf_counter() - t_start
    if eval_only:  # the training of the earlier run plus this evaluation
        wall += max(timings.values())
    chance = 100 * sum(1 / len(ex.choices) for ex in ev.examples) / len(ev.examples)
    import platform

    meta = {"label": label, "chance": chance,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}", "size": vars(size), "backbone": backbone, "seed": seed, "threads": threads,
            "train_seconds": timings, "wall_seconds": wall, "evaluation_rerun": eval_only,
            "command": "ivtlr demo" + (" --quick" if label == "quick" else "") +
                       (f" --backbone {backbone}" if backbone != "qwen2-vl" else "") +
                       (f" --latent-grad {size.latent_grad}" if size.latent_grad != "detach" else "")}
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": ev.results}, indent=2))
    report = write_report(out, meta, ev.results, out / "ivtlr" / "metrics.jsonl", out / "nocot" / "metrics.jsonl")
    print(f"done in {wall / 60:.1f} min: {report}", flush=True)
    return 0
