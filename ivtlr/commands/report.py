"""The demo's report: Markdown tables and PNG plots from measured results (nothing here is typed in by hand).

``ivtlr report RUN_DIR [--publish-docs DOCS]`` rebuilds a report from a demo folder's results.json and
analysis/analysis.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..analyze import format_markdown
from ..config import CurriculumConfig
from ..engine import LatentConfig

#: the authors' latent semantics (detach, raw fed-back states, [z_t, h_t]): LatentConfig's defaults
AUTHORS_LATENT = {k: getattr(LatentConfig(), k) for k in ("latent_grad", "feedback_norm", "order", "selection")}

ABLATIONS = ("no_latent_text", "no_latent_vision", "no_latent_part", "random_patches")


def _acc(row: dict, judge: str) -> float:
    return 100 * row["accuracy"][judge]


def _loss_by_stage(metrics: Path) -> dict[int, tuple[float, float, int, int]]:
    """stage -> (first loss, last loss, steps, overtime epochs) of one run's metrics.jsonl."""
    out: dict[int, list[float]] = {}
    overtime: dict[int, set[int]] = {}
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if "loss" in row:
                out.setdefault(row["stage"], []).append(row["loss"])
                if "overtime" in row:  # curriculum.overtime_epochs
                    overtime.setdefault(row["stage"], set()).add(row["overtime"])
    return {s: (v[0], v[-1], len(v), len(overtime.get(s, ()))) for s, v in out.items()}


def stages(results: dict, n: int) -> list[tuple[int, dict]]:
    """(stage, row) for stage 1..n, each with its own latents (stage n is the final IVT-LR model)."""
    return [(s, results[f"stage_{s}"]) for s in range(1, n + 1) if f"stage_{s}" in results]


#: rows that run IVT-LR's own computation (the same passes and tokens, other patches or a gray image): their
#: distance from IVT-LR's time is this run's timing noise
SAME_COST = {"random_patches": "random patches", "blind_ivtlr": "blind IVT-LR"}


def timing_spread(results: dict) -> str:
    """``"; the same computation (random patches, ...) timed up to X% apart"``: how far the rows that repeat
    IVT-LR's computation were timed from it in this run (the shared machine's noise, by which to read a time ratio
    near its target); "" without such rows."""
    base = results["ivtlr"]["latency_s"]
    twins = [k for k in SAME_COST if k in results and results[k].get("ar_steps") == results["ivtlr"]["ar_steps"]
             and results[k].get("latency_s")]
    if not twins:
        return ""
    spread = max(abs(results[k]["latency_s"] - base) / base for k in twins)
    names = ", ".join(SAME_COST[k] for k in twins)
    return f"; the same computation ({names}) timed up to {100 * spread:.0f}% apart"


def targets(results: dict, meta: dict) -> list[tuple[str, bool, str]]:
    """The demo's targets (docs/results.md lists them): (target, met, measured)."""
    judge, chance = meta["judge"], 100 * meta["chance"]
    r = results
    acc = lambda key: _acc(r[key], judge)  # noqa: E731
    out = [("CoT at least 70% overall", acc("cot") >= 70, f"{acc('cot'):.1f}")]
    worst = min(((100 * r["cot"]["by_kind"][k] - 100 * c, k) for k, c in meta["chance_by_kind"].items()),
                default=(float("nan"), "-"))
    out.append(("CoT: no kind of question within 10 points of its chance", worst[0] >= 10,
                "; ".join(f"{k} {100 * r['cot']['by_kind'][k]:.1f} (chance {100 * c:.1f})"
                          for k, c in meta["chance_by_kind"].items())))
    out.append(("IVT-LR at least CoT - 3", acc("ivtlr") >= acc("cot") - 3, f"{acc('ivtlr'):.1f} vs {acc('cot'):.1f}"))
    out.append(("IVT-LR at least No-CoT + 10", acc("ivtlr") >= acc("nocot") + 10,
                f"{acc('ivtlr'):.1f} vs {acc('nocot'):.1f}"))
    for key in ABLATIONS:
        out.append((f"{r[key]['name'].replace('ablation: ', '')}: at least 5 points below IVT-LR",
                    acc(key) <= acc("ivtlr") - 5, f"{acc(key):.1f} vs {acc('ivtlr'):.1f}"))
    per_stage = [acc(f"stage_{s}") for s, _ in stages(r, meta["recipe"]["max_latent_stage"])]
    out.append(("per-stage accuracy not decreasing from stage 1 to the final stage",
                all(b >= a for a, b in zip(per_stage, per_stage[1:])), " -> ".join(f"{a:.1f}" for a in per_stage)))
    steps = r["ivtlr"]["ar_steps"] / r["cot"]["ar_steps"]
    out.append(("IVT-LR AR steps at most 1/5 of CoT's", steps <= 0.2,
                f"{r['ivtlr']['ar_steps']:.1f} vs {r['cot']['ar_steps']:.1f} ({steps:.2f}x)"))
    tq = r["ivtlr"]["latency_s"] / r["cot"]["latency_s"]
    out.append(("IVT-LR time per question at most 1/3 of CoT's (after a warm-up)", tq <= 1 / 3,
                f"{1000 * r['ivtlr']['latency_s']:.1f} vs {1000 * r['cot']['latency_s']:.1f} ms ({tq:.3f}x)"
                + timing_spread(r)))
    for key in ("blind_ivtlr", "blind_cot"):
        gap = acc(key) - chance
        out.append((f"{r[key]['name']} within 5 points of chance ({chance:.1f})", abs(gap) <= 5,
                    f"{acc(key):.1f} ({gap:+.1f})"))
    return out


def _plots(out: Path, results: dict, meta: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    judge, chance = meta["judge"], 100 * meta["chance"]
    acc = lambda key: _acc(results[key], judge)  # noqa: E731
    files = []

    def finish(fig, ax, name, title, ylabel="accuracy (%)", legend_loc=None):
        ax.axhline(chance, color="gray", ls="--", lw=1, label=f"chance ({chance:.1f}%)")
        ax.legend(fontsize=8, loc="upper right" if legend_loc is None else legend_loc)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        files.append(name)

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for key, marker in (("ivtlr", "o"), ("cot", "s"), ("nocot", "^"), ("no_latent_part", "v")):
        ax.scatter(results[key]["ar_steps"], acc(key), s=70, marker=marker, label=results[key]["name"])
    ax.set_xlabel("autoregressive steps per question")
    finish(fig, ax, "accuracy_vs_steps.png", "accuracy against autoregressive steps", legend_loc="center right")

    n = meta["recipe"]["max_latent_stage"]
    bars = [("stage 0\n(CoT)", acc("cot"))] + [(f"stage {s}", _acc(row, judge)) for s, row in stages(results, n)]
    if "ivtlr_authors" in results:
        bars.append((f"stage {n}\nauthors'", acc("ivtlr_authors")))
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.bar([b for b, _ in bars], [v for _, v in bars], color=["#4878d0"] * (len(bars) - ("ivtlr_authors" in results))
           + ["#d65f5f"] * ("ivtlr_authors" in results))
    finish(fig, ax, "accuracy_per_stage.png", "accuracy per curriculum stage (each with its own latents)")

    keys = ["ivtlr", *ABLATIONS, "blind_ivtlr"]
    names = ["IVT-LR", "no latent\ntext", "no latent\nvision", "no latent\npart", "random\npatches", "blind\n(gray)"]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.bar(names, [acc(k) for k in keys], color=["#4878d0"] + ["#ee854a"] * (len(keys) - 1))
    ax.tick_params(axis="x", labelsize=8)
    finish(fig, ax, "ablations.png", "ablations of the latent steps")
    return files


def _table(results: dict, judges: list[str], kinds: list[str], headline: str) -> list[str]:
    head = ("| key | mode | " + " | ".join(f"accuracy ({j})" for j in judges) + " | "
            + " | ".join(f"{k} ({headline})" for k in kinds) + " | AR steps | latency (ms/question) |")
    lines = [head, "|" + "---|" * (len(judges) + len(kinds) + 4)]
    for key, row in results.items():
        if key.startswith("stage_") and row.get("name") == results.get("ivtlr", {}).get("name"):
            continue  # the final stage is the IVT-LR row
        accs = " | ".join(f"{_acc(row, j):.1f}" for j in judges)
        per_kind = " | ".join(f"{100 * row['by_kind'].get(k, float('nan')):.1f}" for k in kinds)
        lines.append(f"| `{key}` | {row['name']} | {accs} | {per_kind} | {row['ar_steps']:.1f} | "
                     f"{1000 * row['latency_s']:.1f} |")
    return lines


def _after_training(meta: dict) -> str:
    """The parts of the run after its trainings, from ``meta["phase_seconds"]`` (absent in older runs)."""
    phases = meta.get("phase_seconds", {})
    labels = {"evaluation": "evaluation", "latency": "latency timing", "analysis": "analysis"}
    parts = [f"{label} {phases[name]:.0f} s" for name, label in labels.items() if name in phases]
    return "; then " + ", ".join(parts) if parts else ""


def _timing_protocol(row: dict) -> str:
    """How the report's latencies were timed (``Evaluator.retime``; older results: rounds of whole modes, 32
    questions)."""
    rounds, block = row.get("latency_rounds", 1), row.get("latency_block")
    questions = f"{row.get('latency_questions', 32)} questions"
    if block:
        return (f"{questions}, in {rounds} rounds that time every mode in turn on each block of {block} questions, after one "
                "untimed question of the block, so that all modes see the same machine conditions")
    return f"{questions}, timed after 4 untimed ones" + (f", in {rounds} rounds that time every mode in turn, so that all modes "
                                             "see the same machine conditions" if rounds > 1 else "")


def _embeddings(recipe: dict) -> str:
    """The report's words for the recipe's embeddings: untied, stage 0 untied (the default), or tied throughout (the
    recipe before stage 0 was untied, and every run recorded before it)."""
    if not recipe.get("tie_embeddings", True):
        return "; untied embeddings"
    if recipe.get("cot_untied"):
        return "; stage 0 with an output head of its own, tied to its input embeddings for the latent stages"
    return "; tied embeddings in every stage, stage 0 too"


def write_report(out: Path, meta: dict, results: dict, analysis: dict | None = None) -> Path:
    """Write ``out/report.md`` and the plots; returns the report's path."""
    judges = list(next(iter(results.values()))["accuracy"])
    judge = meta["judge"]
    kinds = sorted(meta["chance_by_kind"])
    recipe, t = meta["recipe"], meta["train_seconds"]
    plots = _plots(out, results, meta)
    trainings = ", ".join(f"{name} {sec / 60:.1f} min" for name, sec in t.items())
    patience, stop = recipe.get("stop_patience", 1), f"{100 * (recipe.get('stop_at') or 0):.0f}%"
    ends = f"once {patience} validations in a row reach {stop}" if patience > 1 else None  # curriculum.stop_patience
    within = f"{100 * recipe.get('overtime_within', CurriculumConfig.overtime_within):.0f} points"
    lines = [
        f"# IVT-LR demo report ({meta['label']})",
        "",
        f"Command: `{meta['command']}`"
        + (" (its evaluation re-run on the same checkpoints with `--eval-only`)" if meta.get("evaluation_rerun") else "")
        + f". Machine: {meta['machine']}. Backbone: tiny {meta['backbone']} trained from scratch (hidden "
        f"{recipe['hidden']}, {recipe['layers']} layers{_embeddings(recipe)}); {recipe['n_train']} training and "
        f"{recipe['n_test']} test "
        f"questions of the synthetic benchmark ({', '.join(f'{k}={v}' for k, v in recipe['synth'].items())}; chance "
        f"{100 * meta['chance']:.1f}%); K = {recipe['k']}; latent_grad {recipe['latent_grad']}, feedback_norm "
        f"{recipe['feedback_norm']}, order {recipe.get('order', AUTHORS_LATENT['order'])}"
        + (f", selection {recipe['selection']}"
           if recipe.get("selection", AUTHORS_LATENT["selection"]) != AUTHORS_LATENT["selection"] else "")
        + (" (the authors' exact latent semantics)" if all(recipe.get(k, v) == v for k, v in AUTHORS_LATENT.items())
           else "")
        + f"; stage mixing {recipe.get('stage_mix_prob', 0)}, epochs: stage 0 "
        + (f"{recipe['cot_stop_after']} to {recipe['cot_epochs']} (it ends "
           f"{ends + ',' if ends else f'at the first validation at {stop}'} after {recipe['cot_stop_after']} epochs"
           + (f"; up to {recipe['cot_epochs'] + recipe['cot_extra_epochs']} while its best validation is below "
              f"{100 * recipe['cot_extra_below']:.0f}%" if recipe.get('cot_extra_epochs') else "") + ")"
           if recipe.get('cot_stop_after') and recipe.get('stop_at') else f"{recipe['cot_epochs']}")
        + ", latent "
        f"stages {'/'.join(map(str, recipe.get('stage_epochs') or [recipe['epochs_per_stage']]))}, lr "
        f"{recipe['lr']}" + (f" (latent stages {recipe['latent_lr']})" if recipe.get("latent_lr") else "")
        + f" {recipe.get('schedule', 'cosine')}"
        + (f" (latent stages' epochs are a maximum: validation on {recipe['n_val']} questions of the benchmark's own "
           f"validation split every {recipe['val_every']} steps"
           + (f" (stage 0's on the first {recipe['cot_n_val']})" if recipe.get('cot_n_val') else "")
           + (f", a stage ends after its first epoch {ends or f'at {stop}'}" if recipe.get('stop_at') else "")
           + (", each stage keeps its best-validated weights" if recipe.get('keep_best') else "")
           + (f"; a latent stage whose rule has not held by the end of its epochs trains one more epoch at a time "
              f"while its validation is within {within} of its best, "
              f"at most {recipe['overtime_epochs']} in all" if recipe.get('overtime_epochs') and recipe.get('stop_at')
              else "") + ")"
           if recipe.get('n_val') and recipe.get('val_every') else "")
        + f"; seed {meta['seed']}; {meta['threads']} torch thread(s) per training; wall time "
        f"{meta['wall_seconds'] / 60:.1f} min (trainings: {trainings}" + _after_training(meta) + ").",
        "",
        f"Accuracy in %, by each judge; the headline judge is `{judge}` (M3CoT's official procedure reading every "
        "option letter the question has; `official` is M3CoT's own judge, which only knows A-F; `reference` is the "
        "authors' lenient rule). AR steps = generated tokens per question. Latency = median wall time per question "
        "at batch size 1 (" + _timing_protocol(results.get("ivtlr", {})) + "). Row keys are those of "
        "results.json.",
        "",
        "## All modes",
        "",
        *_table(results, judges, kinds, judge),
        "",
        "## The targets, measured",
        "",
        "| target | met | measured |",
        "|---|---|---|",
        *[f"| {name} | {'yes' if ok else '**no**'} | {m} |" for name, ok, m in targets(results, meta)],
        "",
        "## Training loss per stage (first step -> last step)",
        "",
        "| run | stage | first loss | last loss | steps | overtime epochs |",
        "|---|---|---|---|---|---|",
    ]
    for run in ("cot", "ivtlr", "authors", "nocot"):
        for stage, (first, last, n, extra) in sorted(_loss_by_stage(out / run / "metrics.jsonl").items()):
            lines.append(f"| {run} | {stage} | {first:.3f} | {last:.3f} | {n} | {extra} |")
    if analysis is not None:
        lines += ["", "## Diagnostics of the final model (`ivtlr analyze`)", "", format_markdown(analysis)]
        lines += [f"![{p}](analysis/{p})" for p in ("hit_rates.png", "probes.png", "interventions.png", "attention.png")
                  if (out / "analysis" / p).is_file()]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", f"Regenerate everything with `{meta['command']}`."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def published_names(seed: int) -> tuple[str, str]:
    """Where a demo of ``seed`` is published under DOCS: (report file, plot folder); seed 0 is the headline
    ``results.md`` with ``img/demo/``, seed S ``results-seedS.md`` with ``img/demo-seedS/``."""
    return ("results.md", "img/demo") if seed == 0 else (f"results-seed{seed}.md", f"img/demo-seed{seed}")


def publish(out: Path, docs: Path) -> None:
    """Copy ``out/report.md`` to DOCS (named by the run's seed, see ``published_names``), plot links rewritten,
    and its plots to the seed's plot folder."""
    seed = json.loads((out / "results.json").read_text())["meta"]["seed"]
    name, folder = published_names(int(seed))
    img = docs / folder
    img.mkdir(parents=True, exist_ok=True)
    text = (out / "report.md").read_text()
    for png in sorted(out.glob("*.png")) + sorted((out / "analysis").glob("*.png")):
        shutil.copy(png, img / png.name)
        rel = png.relative_to(out).as_posix()
        text = text.replace(f"]({rel})", f"]({folder}/{png.name})")
    (docs / name).write_text(text)
    print(f"published {docs / name}")


def seeds_table(runs: list[Path]) -> str:
    """One Markdown row per demo run (the README's table of seeds): wall time, the headline accuracies, every
    ablation, the stages, AR steps, latency, and how many of the report's targets it meets."""
    head = ("| seed | wall (min) | CoT | IVT-LR | No-CoT | no latent text | no latent vision | no latent part | "
            "random patches | stages | AR steps | ms/question | targets met |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for run in runs:
        saved = json.loads((Path(run) / "results.json").read_text())
        meta, r = saved["meta"], saved["results"]
        acc = lambda key: _acc(r[key], meta["judge"])  # noqa: E731
        met = targets(r, meta)
        staged = " / ".join(f"{acc(f'stage_{s}'):.1f}" for s, _ in stages(r, meta["recipe"]["max_latent_stage"]))
        lines.append(
            f"| {meta['seed']} | {meta['wall_seconds'] / 60:.1f} | {acc('cot'):.1f} | {acc('ivtlr'):.1f} | "
            f"{acc('nocot'):.1f} | " + " | ".join(f"{acc(k):.1f}" for k in ABLATIONS) + f" | {staged} | "
            f"{r['ivtlr']['ar_steps']:.0f} vs {r['cot']['ar_steps']:.0f} | "
            f"{1000 * r['ivtlr']['latency_s']:.1f} vs {1000 * r['cot']['latency_s']:.1f} | "
            f"{sum(ok for _, ok, _ in met)} of {len(met)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``ivtlr report RUN_DIR [--publish-docs DOCS]``: rebuild a demo's report from its saved results;
    ``ivtlr report RUN_DIR [RUN_DIR ...] --seeds-table``: print the README's table of seeds."""
    import argparse

    p = argparse.ArgumentParser(prog="ivtlr report")
    p.add_argument("run", nargs="+", help="a demo output folder (with results.json); several with --seeds-table")
    p.add_argument("--publish-docs", metavar="DOCS", help="also copy the report to DOCS/results.md and its plots to "
                   "DOCS/img/demo/ (seed S: results-seedS.md, img/demo-seedS/)")
    p.add_argument("--seeds-table", action="store_true", help="print one Markdown row per run (the README's table)")
    args = p.parse_args(argv)
    if args.seeds_table:
        print(seeds_table([Path(r) for r in args.run]))
        return 0
    if len(args.run) > 1:
        p.error("several runs only with --seeds-table")
    run = Path(args.run[0])
    saved = json.loads((run / "results.json").read_text())
    analysis_file = run / "analysis" / "analysis.json"
    analysis = json.loads(analysis_file.read_text()) if analysis_file.is_file() else None
    path = write_report(run, saved["meta"], saved["results"], analysis)
    print(f"wrote {path}")
    if args.publish_docs:
        publish(run, Path(args.publish_docs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
