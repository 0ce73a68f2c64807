"""``ivtlr analyze``: what each latent step selects, what its fed-back state encodes, and what breaks when you
intervene on it, measured against the task's ground truth where it has one (the synthetic benchmark knows the
cells and contents every rationale step reads: ``Task.step_truth``).

Measures (all on the test split unless said otherwise):

- selection hit rate: per latent step t, the share of questions whose K selected image tokens cover the cell(s)
  that rationale step j reads, for every j, beside the chance of K random tokens covering a cell;
- probes: a linear (softmax) probe fit on the train split's fed-back states h_t and scored on the test split's,
  reading each rationale step's content (e.g. a colour) and the answer letter, beside the majority-class rate;
  and, beside them, the chain-of-thought model's exact match per written step;
- causal interventions, scored as accuracy, per latent step and at all steps at once: h_t replaced by zeros, by
  another question's h_t, or by noise of the same norm; latent vision replaced by K random image tokens, or by
  the K lowest-scored ones (``ivtlr.engine.Intervention``);
- scales: the mean norm of the fed-back states (raw and as fed back), of the token embeddings and of the image
  embeddings.

What it is not: training or the accuracy table of ``ivtlr eval`` (it reuses the same generation path).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .batching import collate
from .curriculum import encode_example, inference_sample
from .engine import Intervention
from .evaluate import predict, predict_runs, score_predictions, step_exact_match, written_steps

#: name -> the intervention (applied per latent step and at all steps)
INTERVENTIONS: dict[str, Intervention] = {
    "h_zero": Intervention(state="zero"),
    "h_shuffle": Intervention(state="shuffle"),
    "h_noise": Intervention(state="noise"),
    "vision_random": Intervention(vision="random"),
    "vision_lowest": Intervention(vision="lowest"),
    "vision_zero": Intervention(vision="zero"),
}
INTERVENTION_TEXT = {
    "h_zero": "h_t replaced by zeros",
    "h_shuffle": "h_t replaced by another question's h_t",
    "h_noise": "h_t replaced by noise of the same norm",
    "vision_random": "latent vision: K random image tokens",
    "vision_lowest": "latent vision: the K lowest-scored image tokens",
    "vision_zero": "latent vision: zero vectors in the K slots (positions kept)",
}


# ---------------------------------------------------------------------------------------------- hit rates
def token_cells(offsets: list[int], token_grid: tuple[int, int], board: int) -> set[int]:
    """The board cells (row-major, ``board`` cells per side) that image-token offsets fall in; a token belongs to
    the cell under its centre (one Qwen2-VL token per cell of the synthetic boards; 4x4 Chameleon codes)."""
    rows, cols = token_grid
    out = set()
    for o in offsets:
        r, c = divmod(int(o), cols)
        out.add(int((r + 0.5) * board / rows) * board + int((c + 0.5) * board / cols))
    return out


def cover_chance(n_tokens: int, k: int, m: int) -> float:
    """Probability that k tokens drawn without replacement from n cover at least one of m given tokens."""
    if k <= 0 or m <= 0:
        return 0.0
    if k > n_tokens - m:
        return 1.0
    return 1.0 - math.comb(n_tokens - m, k) / math.comb(n_tokens, k)


def hit_rates(selected: list[list[list[int]]], truths: list, token_grids: list[tuple[int, int]]) -> dict:
    """Per latent step t and rationale step j: the share of questions whose step-t selection covers a cell that
    step j reads; and per chain position (start, hop 1, ...), the share covering that cell.

    Args:
        selected: per question, per latent step, the selected image-token offsets.
        truths: per question, its ``StepTruth`` (cells per rationale step, the chain's path, the board side).
        token_grids: per question, (rows, cols) of its image tokens.
    Returns:
        {"by_step": [[rate for j] for t], "by_chain": [[rate for chain cell] for t], "chance": [per t]}.
    """
    n_steps = max((len(s) for s in selected), default=0)
    n_roles = max((len(tr.cells) for tr in truths), default=0)
    n_chain = max((len(tr.path) for tr in truths), default=0)
    by_step = [[0] * n_roles for _ in range(n_steps)]
    by_chain = [[0] * n_chain for _ in range(n_steps)]
    chance = [0.0] * n_steps
    for sel, tr, grid in zip(selected, truths, token_grids):
        n_tokens = grid[0] * grid[1]
        per_cell = n_tokens // (tr.grid * tr.grid)
        for t, offsets in enumerate(sel):
            cells = token_cells(offsets, grid, tr.grid)
            for j, want in enumerate(tr.cells):
                by_step[t][j] += bool(cells & set(want))
            for i, c in enumerate(tr.path):
                by_chain[t][i] += c in cells
            chance[t] += cover_chance(n_tokens, len(offsets), per_cell)
    n = max(1, len(selected))
    return {"by_step": [[v / n for v in row] for row in by_step],
            "by_chain": [[v / n for v in row] for row in by_chain],
            "chance": [c / n for c in chance]}


# ------------------------------------------------------------------------------------------------- probes
def fit_probe(x_train: torch.Tensor, y_train: list, x_test: torch.Tensor, y_test: list, l2: float = 1e-3,
              steps: int = 200) -> dict:
    """A softmax-regression probe on standardised features (full-batch L-BFGS), fit on train, scored on test.

    Returns {"accuracy", "majority", "classes"}; labels unseen in train count as errors on test."""
    classes = sorted(set(y_train))
    index = {c: i for i, c in enumerate(classes)}
    ytr = torch.tensor([index[y] for y in y_train])
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    xtr, xte = (x_train - mean) / std, (x_test - mean) / std
    w = torch.zeros(xtr.shape[1], len(classes), requires_grad=True)
    b = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr @ w + b, ytr) + l2 * (w * w).sum()
        loss.backward()
        return loss

    if len(classes) > 1:
        opt.step(closure)
    with torch.no_grad():
        pred = (xte @ w + b).argmax(1).tolist()
    correct = sum(classes[p] == y for p, y in zip(pred, y_test))
    majority = max(classes, key=y_train.count)
    return {"accuracy": correct / max(1, len(y_test)),
            "majority": sum(y == majority for y in y_test) / max(1, len(y_test)), "classes": len(classes)}


def probe_states(train_states: torch.Tensor, train_labels: dict[str, list], test_states: torch.Tensor,
                 test_labels: dict[str, list]) -> dict:
    """Probe every latent step's state for every label set. States: (Q, n, D). Returns {label: [per step]}."""
    out = {}
    for name in train_labels:
        out[name] = [fit_probe(train_states[:, t], train_labels[name], test_states[:, t], test_labels[name])
                     for t in range(train_states.shape[1])]
    return out


def step_labels(task, examples, truths) -> dict[str, list]:
    """Probe targets: each rationale step's content (where the task knows it) and the answer letter."""
    labels = {"answer": [ex.answer_letter for ex in examples]}
    if truths and all(tr is not None for tr in truths):
        for j in range(len(truths[0].content)):
            labels[f"step {j + 1} content"] = [tr.content[j] for tr in truths]
    return labels


# ------------------------------------------------------------------------------------------ the analysis
@dataclass
class AnalysisInputs:
    """What ``run_analysis`` needs: a loaded checkpoint, its split examples, and optionally the CoT model."""

    inference: object  # ivtlr.inference.Inference
    test: list
    train: list
    n_latents: int
    cot: object | None = None  # an Inference of the chain-of-thought (stage-0) model
    batch_size: int = 32
    max_new_tokens: int = 16
    cot_max_new_tokens: int = 128


def _encode(inf, examples):
    return [encode_example(inf.task, inf.encoder, ex, inf.tokens.image) for ex in examples]


def _accuracy(inf, examples, records) -> float:
    report = score_predictions(inf.task, {ex.id: ex for ex in examples}, records, judge=None)
    return report.overall[report.judges[0]].accuracy


def cot_step_match(cot, examples, truths: list, batch_size: int, max_new_tokens: int) -> dict:
    """The chain-of-thought model's written steps against the gold steps: exact match per step, accuracy, and
    (where every example has its ground truth in ``truths``, ``Task.step_truth``) ``by_source``, see
    ``step_match_by_source``."""
    records = predict(cot.engine, cot.encoder, _encode(cot, examples), 0, max_new_tokens, batch_size)
    out = {"exact_match": step_exact_match(cot.task, {ex.id: ex for ex in examples}, records),
           "accuracy": _accuracy(cot, examples, records)}
    if examples and all(tr is not None for tr in truths):
        out["by_source"] = step_match_by_source(cot.task, examples, truths, [r.output for r in records])
    return out


def step_match_by_source(task, examples, truths, outputs: list[str]) -> dict[str, dict[str, int]]:
    """Which reads a chain-of-thought model has not learnt. Every written step j >= 2 whose step j - 1 is exactly
    right starts from the content step j - 1 read (dots: the colour of the cell that step j must find). Per such
    content: how many of those steps are exactly right, of how many. A content the model has not learnt to look up
    shows as a low share while every other is near 100% (a stage 0 that plateaus below 100%)."""
    table: dict[str, dict[str, int]] = {}
    for ex, truth, output in zip(examples, truths, outputs):
        gold, written = [g.strip() for g in task.steps(ex)], written_steps(output)
        for j in range(1, min(len(gold), len(truth.content) + 1)):
            if j >= len(written) or written[j - 1] != gold[j - 1]:
                break
            cell = table.setdefault(str(truth.content[j - 1]), {"right": 0, "of": 0})
            cell["of"] += 1
            cell["right"] += written[j] == gold[j]
    return dict(sorted(table.items(), key=lambda kv: (kv[1]["right"] / kv[1]["of"], kv[0])))


def attention_profile(inf, encoded, n_latents: int, batch_size: int, max_new_tokens: int) -> dict:
    """The paper's attention analysis (its Figure 5) of one model, per reasoning step: the vision/text ratio and
    the focus of the query row whose state carries the step, mean and standard deviation over the questions.

    Latent mode (``n_latents`` > 0): the row of latent step t is the one whose hidden state h_t is fed back.
    Explicit mode (``n_latents`` = 0, a chain-of-thought model): the row of written step t is that of the token
    that ends it (its newline), the position whose state the model carries into step t + 1.
    """
    records = predict(inf.engine, inf.encoder, encoded, n_latents, max_new_tokens, batch_size, keep_attention=True)
    per_step: list[list[torch.Tensor]] = []
    for r in records:
        if n_latents:
            rows = list(r.attention)
        else:
            ends = [j for j, i in enumerate(r.token_ids) if "\n" in inf.encoder.tokenizer.decode([i])]
            rows = [r.token_attention[j] for j in ends if j < len(r.token_attention)]
        for t, row in enumerate(rows):
            if len(per_step) <= t:
                per_step.append([])
            per_step[t].append(row)
    out = {"mode": "latent" if n_latents else "explicit", "questions": [len(v) for v in per_step]}
    for i, name in enumerate(("vision_ratio", "focus")):
        vals = [torch.stack(v)[:, i].double() for v in per_step]
        uniform = [torch.stack(v)[:, i + 2].double() for v in per_step]
        out[name] = {"mean": [float(v.mean()) for v in vals],
                     "std": [float(v.std()) if len(v) > 1 else 0.0 for v in vals],
                     "uniform": [float(v.mean()) for v in uniform]}
    return out


def scales(inf, encoded, records) -> dict:
    """Mean norms: raw fed-back states per step, the states as fed back, token embeddings, image embeddings."""
    bb = inf.engine.backbone
    states = torch.stack([r.states for r in records]) if records and records[0].states is not None else None
    raw = states.norm(dim=-1).mean(0).tolist() if states is not None else []
    with torch.no_grad():
        token_norm = float(bb.embedding.weight.float().norm(dim=-1).mean())
        batch = collate([inference_sample(ex, 0, inf.tokens.latent) for ex in encoded[:32]], inf.tokens.pad)
        batch = batch.to(bb.device)
        embeds = bb.embed_inputs(batch.input_ids, batch.vision).float()
        image = bb.image_mask(batch.input_ids) & batch.attention_mask.bool()
        text = batch.attention_mask.bool() & ~image
        image_norm = float(embeds[image].norm(dim=-1).mean()) if image.any() else float("nan")
        prompt_norm = float(embeds[text].norm(dim=-1).mean())
    cfg = inf.engine.config
    fed = [token_norm] * len(raw) if cfg.feedback_norm == "embedding" else raw
    if not cfg.latent_text:
        fed = [float(bb.embed_tokens(torch.tensor([inf.tokens.latent], device=bb.device)).norm())] * len(raw)
    return {"h_raw": raw, "h_fed": fed, "token_embedding": token_norm, "prompt_token": prompt_norm,
            "image_embedding": image_norm}


def run_analysis(inputs: AnalysisInputs, progress=print) -> dict:
    """Every measure of the module docstring. Returns a JSON-ready dict."""
    inf, n = inputs.inference, inputs.n_latents
    task = inf.task
    test_enc, train_enc = _encode(inf, inputs.test), _encode(inf, inputs.train)
    run = lambda enc, new=inputs.max_new_tokens: predict(  # noqa: E731
        inf.engine, inf.encoder, enc, n, new, inputs.batch_size, keep_states=True)
    k = inf.engine.config.k_effective
    # the model as it is, then each intervention at each latent step and at all of them: one prompt pass per batch
    runs: dict[str, Intervention | None] = {"base": None}
    for name, iv in INTERVENTIONS.items() if n > 0 else ():
        if iv.vision and not k:
            continue
        for steps in [(t,) for t in range(1, n + 1)] + [None]:
            runs[f"{name}/{'all' if steps is None else steps[0]}"] = Intervention(iv.state, iv.vision, steps, iv.seed)
    progress(f"analyze: {len(inputs.test)} test questions, {n} latent steps, K = {k}"
             + (f"; {len(runs) - 1} intervention runs on each batch's prompt pass" if len(runs) > 1 else ""))
    records = predict_runs(inf.engine, inf.encoder, test_enc, n, inputs.max_new_tokens, runs, inputs.batch_size,
                           keep_states=True)
    base = records.pop("base")
    result: dict = {"n_test": len(inputs.test), "n_train": len(inputs.train), "n_latents": n,
                    "k": inf.engine.config.k_effective, "latent": vars(inf.engine.config).copy(),
                    "accuracy": _accuracy(inf, inputs.test, base),
                    "chance": sum(1 / len(ex.choices) for ex in inputs.test) / max(1, len(inputs.test))}
    truths = [task.step_truth(ex) for ex in inputs.test]
    has_truth = n > 0 and all(tr is not None for tr in truths)
    if has_truth and inf.engine.config.k_effective:
        grids = [inf.engine.backbone.image_grids(e.vision)[0] for e in test_enc]
        result["hit_rates"] = hit_rates([r.selected for r in base], truths, grids)
    if n > 0 and inputs.train:
        progress(f"analyze: probes (fit on {len(inputs.train)} train questions)")
        train_states = torch.stack([r.states for r in run(train_enc, new=1)])
        test_states = torch.stack([r.states for r in base])
        train_truths = [task.step_truth(ex) for ex in inputs.train] if has_truth else []
        result["probes"] = probe_states(train_states, step_labels(task, inputs.train, train_truths),
                                        test_states, step_labels(task, inputs.test, truths if has_truth else []))
    if inputs.cot is not None:
        progress("analyze: chain-of-thought model, exact match per written step")
        result["cot"] = cot_step_match(inputs.cot, inputs.test, truths, inputs.batch_size,
                                     inputs.cot_max_new_tokens)
    if records:
        result["interventions"] = {}
        for key, recs in records.items():
            name, steps = key.split("/")
            result["interventions"].setdefault(name, {})[steps] = _accuracy(inf, inputs.test, recs)
    if n > 0:
        progress("analyze: attention per step (vision/text ratio, focus)")
        result["attention"] = {"latent": attention_profile(inf, test_enc, n, inputs.batch_size, inputs.max_new_tokens)}
        if inputs.cot is not None:
            result["attention"]["explicit"] = attention_profile(inputs.cot, _encode(inputs.cot, inputs.test), 0,
                                                                inputs.batch_size, inputs.cot_max_new_tokens)
    result["scales"] = scales(inf, test_enc, base)
    return result


# ------------------------------------------------------------------------------------------------ outputs
def format_markdown(result: dict) -> str:
    """The analysis as Markdown tables (percentages)."""
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    n = result["n_latents"]
    lines = [f"Accuracy {pct(result['accuracy'])}% on {result['n_test']} test questions; {n} latent steps, "
             f"K = {result['k']}.", ""]
    if "hit_rates" in result:
        hr = result["hit_rates"]
        roles = len(hr["by_step"][0]) if hr["by_step"] else 0
        chain = len(hr["by_chain"][0]) if hr["by_chain"] else 0
        lines += ["### Selection hit rate (% of questions whose K selected tokens cover the cell)", "",
                  "| latent step | " + " | ".join(f"cells of rationale step {j + 1}" for j in range(roles)) + " | "
                  + " | ".join(["start cell"] + [f"hop-{i} cell" for i in range(1, chain)]) + " | chance |",
                  "|---" * (roles + chain + 2) + "|"]
        for t in range(len(hr["by_step"])):
            lines.append(f"| {t + 1} | " + " | ".join(pct(v) for v in hr["by_step"][t]) + " | "
                         + " | ".join(pct(v) for v in hr["by_chain"][t]) + f" | {pct(hr['chance'][t])} |")
        lines.append("")
    if "probes" in result:
        names = list(result["probes"])
        lines += ["### Linear probes on the fed-back states h_t (test accuracy %, majority class in brackets)", "",
                  "| latent step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for t in range(n):
            cells = [f"{pct(result['probes'][m][t]['accuracy'])} ({pct(result['probes'][m][t]['majority'])})"
                     for m in names]
            lines.append(f"| h_{t + 1} | " + " | ".join(cells) + " |")
        lines.append("")
    if "cot" in result:
        em = result["cot"]["exact_match"]
        lines += [f"Chain-of-thought model (accuracy {pct(result['cot']['accuracy'])}%): exact match of its written "
                  "steps with the gold steps: " + ", ".join(f"step {j + 1} {pct(v)}%" for j, v in enumerate(em)) + ".",
                  ""]
        if result["cot"].get("by_source"):
            shares = [f"{c} {pct(v['right'] / v['of'])}% of {v['of']}" for c, v in result["cot"]["by_source"].items()]
            lines += ["Its written steps 2 onwards whose step before was right, by the content that step read (what "
                      "the next step has to find), exactly right of all: " + ", ".join(shares) + ".", ""]
    if "interventions" in result:
        lines += ["### Interventions (accuracy %; unchanged: " + pct(result["accuracy"]) + ")", "",
                  "| intervention | " + " | ".join(f"step {t}" for t in range(1, n + 1)) + " | all steps |",
                  "|---" * (n + 2) + "|"]
        for name, per in result["interventions"].items():
            lines.append(f"| {INTERVENTION_TEXT[name]} | " + " | ".join(pct(per[str(t)]) for t in range(1, n + 1))
                         + f" | {pct(per['all'])} |")
        lines.append("")
    if "attention" in result:
        lines += ["### Attention per reasoning step (mean ± sd over questions)", "",
                  "Vision/text ratio: attention mass on image embeddings (the prompt's and the inserted ones) over the "
                  "mass on text and latent text. Focus: the inverse entropy of the attention row (layers and heads "
                  "averaged), higher is more focused. In brackets: the value under uniform attention over the same "
                  "keys (chance).", "",
                  "| mode | step | vision/text ratio | focus | questions |", "|---|---|---|---|---|"]
        for mode, prof in result["attention"].items():
            for t, q in enumerate(prof["questions"]):
                lines.append(f"| {mode} | {t + 1} | {prof['vision_ratio']['mean'][t]:.3f} ± "
                             f"{prof['vision_ratio']['std'][t]:.3f} ({prof['vision_ratio']['uniform'][t]:.3f}) | "
                             f"{prof['focus']['mean'][t]:.3f} ± {prof['focus']['std'][t]:.3f} "
                             f"({prof['focus']['uniform'][t]:.3f}) | {q} |")
        lines.append("")
    sc = result["scales"]
    lines += ["### Scales (mean L2 norm)", "",
              f"- fed-back states per step, raw: {', '.join(f'{v:.2f}' for v in sc['h_raw'])}; as fed back: "
              f"{', '.join(f'{v:.2f}' for v in sc['h_fed'])}",
              f"- token embeddings (rows of the embedding matrix): {sc['token_embedding']:.3f}; prompt text tokens: "
              f"{sc['prompt_token']:.3f}; image embeddings: {sc['image_embedding']:.3f}", ""]
    return "\n".join(lines)


def plot(result: dict, out: Path) -> list[str]:
    """PNG plots of the hit rates, probes and interventions; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    n = result["n_latents"]
    steps = list(range(1, n + 1))

    def save(fig, ax, name, **legend):
        ax.legend(**{"fontsize": 8, **legend})
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        files.append(name)

    if "hit_rates" in result:
        hr = result["hit_rates"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        chain = len(hr["by_chain"][0])
        width = 0.8 / max(1, chain)
        for i in range(chain):
            ax.bar([t + (i - (chain - 1) / 2) * width for t in steps], [100 * hr["by_chain"][t - 1][i] for t in steps],
                   width, label="start cell" if i == 0 else f"hop-{i} cell")
        ax.plot(steps, [100 * c for c in hr["chance"]], "k--", label="chance")
        ax.set(xlabel="latent step", ylabel="% of questions selected", title="what each latent step selects",
               xticks=steps, ylim=(0, 105))
        save(fig, ax, "hit_rates.png")
    if "probes" in result:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for name, per in result["probes"].items():
            ax.plot(steps, [100 * p["accuracy"] for p in per], "o-", label=name)
        ax.plot(steps, [100 * result["probes"]["answer"][t - 1]["majority"] for t in steps], "k--",
                label="majority (answer)")
        ax.set(xlabel="fed-back state h_t", ylabel="probe test accuracy (%)", title="what each h_t encodes",
               xticks=steps, ylim=(0, 105))
        save(fig, ax, "probes.png")
    if "interventions" in result:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        names = list(result["interventions"])
        cols = [str(t) for t in steps] + ["all"]
        width = 0.8 / len(cols)
        for i, col in enumerate(cols):
            ax.bar([x + (i - (len(cols) - 1) / 2) * width for x in range(len(names))],
                   [100 * result["interventions"][m][col] for m in names], width,
                   label=f"step {col}" if col != "all" else "all steps")
        ax.axhline(100 * result["accuracy"], color="k", ls="--", label="no intervention")
        ax.axhline(100 * result["chance"], color="gray", ls=":", label=f"chance ({100 * result['chance']:.1f}%)")
        ax.set_xticks(range(len(names)), [m.replace("_", "\n") for m in names], fontsize=8)
        ax.set(ylabel="accuracy (%)", title="causal interventions on the latent steps", ylim=(0, 105))
        save(fig, ax, "interventions.png", fontsize=7, ncol=2)
    if "attention" in result:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
        for ax, key, label in zip(axes, ("vision_ratio", "focus"), ("vision/text attention ratio", "focus (1/entropy)")):
            for mode, prof in result["attention"].items():
                xs = list(range(1, len(prof[key]["mean"]) + 1))
                line = ax.errorbar(xs, prof[key]["mean"], yerr=prof[key]["std"], marker="o", capsize=3,
                                   label=f"{mode} ({'latent steps' if mode == 'latent' else 'written CoT steps'})")
                ax.plot(xs, prof[key]["uniform"], ls="--", lw=1, color=line[0].get_color(),
                        label=f"{mode}: uniform attention (chance)")
            longest = max(len(p[key]["mean"]) for p in result["attention"].values())
            ax.set(xlabel="reasoning step", ylabel=label, xticks=list(range(1, longest + 1)))
        axes[0].set_ylim(bottom=0)
        axes[0].set_title("attention on vision vs text", fontsize=10)
        axes[1].set_title("attention focus", fontsize=10)
        save(fig, axes[1], "attention.png", fontsize=7)
    return files


def write_analysis(out: str | Path, result: dict) -> Path:
    """analysis.json, analysis.md and the PNG plots into ``out``; returns the Markdown file."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis.json").write_text(json.dumps(result, indent=2))
    files = plot(result, out)
    md = out / "analysis.md"
    md.write_text("# Latent-step diagnostics\n\n" + format_markdown(result) + "\n"
                  + "".join(f"![{f}]({f})\n" for f in files))
    return md
