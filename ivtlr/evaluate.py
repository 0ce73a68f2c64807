"""Generation-based evaluation: batched answers through the latent engine, scored by the task's judges.

``predict`` runs any mode (IVT-LR with n latent steps, chain-of-thought with n = 0 and a long budget, No-CoT,
ablations through the engine's config) and returns one record per question with the generated text, the
autoregressive steps and the selected patches; ``score_predictions`` turns them into the task's report.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from .batching import collate
from .curriculum import EncodedExample, encode_example, inference_sample
from .engine import Intervention, LatentEngine
from .tasks.prompts import ANSWER_PREFIX


@dataclass
class PredictionRecord:
    id: str
    output: str  # generated text, special tokens removed
    n_generated: int  # autoregressive steps (tokens generated, eos included)
    selected: list[list[int]]  # per latent step, image-token offsets in insertion order
    seconds: float  # wall time of this question's batch divided by the batch size
    states: torch.Tensor | None = None  # (n_latents, D) raw fed-back states, when asked for (analysis)
    # when asked for (analysis): (n_latents, 4) vision/text ratio and focus per latent step, and both under uniform
    # attention (``ivtlr.attention.attention_measures``); (n_generated - 1, 4) the same of each generated token's
    # query row (the last token is never fed back); the generated ids
    attention: torch.Tensor | None = None
    token_attention: torch.Tensor | None = None
    token_ids: list[int] | None = None


def predict(
    engine: LatentEngine,
    encoder,
    examples: list[EncodedExample],
    n_latents: int,
    max_new_tokens: int,
    batch_size: int = 16,
    progress=None,
    intervention=None,
    keep_states: bool = False,
    keep_attention: bool = False,
    on_records=None,
) -> list[PredictionRecord]:
    """Generate for every example (batched, in order). ``progress(done, total)`` is called after each batch, and
    ``on_records(records)`` with the batch's records (to stream them to disk).

    ``intervention`` (an ``ivtlr.engine.Intervention``) is passed to the engine; ``keep_states`` keeps each
    question's fed-back states (on the CPU, float32) in its record; ``keep_attention`` its attention measures."""
    out: list[PredictionRecord] = []
    for chunk, batch in _batches(engine, examples, n_latents, batch_size):
        t0 = time.perf_counter()
        gen = engine.generate(batch, max_new_tokens, intervention=intervention, attention=keep_attention)
        _sync(batch)
        out += _records(encoder, chunk, gen, (time.perf_counter() - t0) / len(chunk), n_latents,
                        keep_states=keep_states, keep_attention=keep_attention)
        if on_records is not None:
            on_records(out[-len(chunk):])
        if progress is not None:
            progress(len(out), len(examples))
    return out


def predict_runs(
    engine: LatentEngine,
    encoder,
    examples: list[EncodedExample],
    n_latents: int,
    max_new_tokens: int,
    runs: dict[str, Intervention | None],
    batch_size: int = 16,
    keep_states: bool = False,
) -> dict[str, list[PredictionRecord]]:
    """``predict`` for several runs of the same questions, one per ``runs`` entry (name -> an intervention or
    None): each batch's prompt runs once (``LatentEngine.prefill``) and every run continues from a copy of it, so
    a run costs its latent passes and decoding only. The records equal those of one ``predict`` per run
    (tests/test_analyze.py), except ``seconds``: a run's own time per question plus its share of the prompt's.
    ``keep_states``: the fed-back states of the runs without an intervention."""
    out: dict[str, list[PredictionRecord]] = {name: [] for name in runs}
    for chunk, batch in _batches(engine, examples, n_latents, batch_size):
        t0 = time.perf_counter()
        prefix = engine.prefill(batch, max_new_tokens)
        _sync(batch)
        shared = (time.perf_counter() - t0) / len(chunk) / len(runs)
        for name, intervention in runs.items():
            t0 = time.perf_counter()
            gen = engine.generate(batch, max_new_tokens, intervention=intervention, prefix=prefix)
            _sync(batch)
            out[name] += _records(encoder, chunk, gen, shared + (time.perf_counter() - t0) / len(chunk), n_latents,
                                  keep_states=keep_states and intervention is None, keep_attention=False)
    return out


def _batches(engine: LatentEngine, examples: list[EncodedExample], n_latents: int, batch_size: int):
    """(examples, their inference batch on the engine's device) of ``batch_size`` questions at a time, in order."""
    tokens = engine.backbone.tokens
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        yield chunk, collate([inference_sample(ex, n_latents, tokens.latent) for ex in chunk],
                             tokens.pad).to(engine.backbone.device)


def _sync(batch) -> None:
    if batch.input_ids.device.type == "cuda":
        torch.cuda.synchronize()


def _records(encoder, chunk: list[EncodedExample], gen, per_question: float, n_latents: int, keep_states: bool,
             keep_attention: bool) -> list[PredictionRecord]:
    """One record per question of a batch's ``GenerationOutput``."""
    states = torch.stack(gen.states, 1).float().cpu() if keep_states and gen.states else None  # (B, n, D)
    stack = lambda rows: torch.stack(rows, 1).cpu() if rows else None  # noqa: E731  (B, steps, 2)
    latent_att, token_att = stack(gen.latent_attention), stack(gen.decode_attention)
    out = []
    for b, ex in enumerate(chunk):
        n = gen.num_generated[b]
        ids = gen.sequences[b, :n].tolist()
        record = PredictionRecord(ex.id, encoder.decode(ids), n, gen.selected[b], per_question,
                                  None if states is None else states[b])
        if keep_attention:
            record.attention = latent_att[b, :n_latents] if latent_att is not None else torch.zeros(0, 4)
            record.token_attention = token_att[b, :n - 1] if token_att is not None else torch.zeros(0, 4)
            record.token_ids = ids
        out.append(record)
    return out


def written_steps(output: str) -> list[str]:
    """The reasoning steps of a generated text: its lines before the answer line (each step is trained as
    ``step + "\n"``, see ``ivtlr.tasks.prompts.step_target``)."""
    lines = [line.strip() for line in output.split("\n")]
    return [line for line in lines if line and not line.startswith(ANSWER_PREFIX.split(",")[0])]


def step_exact_match(task, examples_by_id: dict, records: list[PredictionRecord]) -> list[float]:
    """Per rationale step j, the share of questions whose generated step j (``written_steps``) is exactly the
    gold step j (chain-of-thought outputs)."""
    gold = [task.steps(examples_by_id[r.id]) for r in records]
    n_steps = max((len(g) for g in gold), default=0)
    hits = [0] * n_steps
    for r, g in zip(records, gold):
        written = written_steps(r.output)
        for j in range(len(g)):
            hits[j] += j < len(written) and written[j] == g[j].strip()
    return [h / max(1, len(records)) for h in hits]


def score_predictions(task, examples_by_id: dict, records: list[PredictionRecord], judge: str | None = "all"):
    """The task's ScoreReport for predictions (every judge side by side by default)."""
    return task.score([(examples_by_id[r.id], r.output) for r in records], judge)


# ------------------------------------------------------------------------------------------- modes
MODES = {
    # mode: (latent steps (None = the checkpoint's last stage), default generation budget)
    "ivtlr": (None, 16),
    "cot": (0, 128),
    "direct": (0, 16),
}


@dataclass
class EvalResult:
    summary: dict
    records: list[PredictionRecord]
    report: object  # the task's ScoreReport
    latency: list[PredictionRecord] = field(default_factory=list)  # the batch-1 timing run's records
    wall: float = 0.0  # seconds of the batched run
    n_new: int = 0  # questions generated by the batched run (not resumed)
    encoded: list[EncodedExample] = field(default_factory=list)  # the questions as run (for more timing rounds)


def blind(example):
    """The example with its image replaced by a plain gray image of the same size (the blind baseline)."""
    from dataclasses import replace

    from PIL import Image

    size = example.image.size if example.image is not None else (84, 84)
    return replace(example, image=Image.new("RGB", size, (128, 128, 128)))


def time_batch1(engine, encoder, encoded: list[EncodedExample], n_latents: int, max_new_tokens: int,
                intervention=None, questions: int = 32, warmup_questions: int = 4) -> list[PredictionRecord]:
    """The batch-1 timing run: ``warmup_questions`` untimed questions, then the first ``questions`` one at a time;
    their records carry each question's seconds."""
    run = lambda enc: predict(engine, encoder, enc, n_latents, max_new_tokens, 1, intervention=intervention)  # noqa: E731
    run(encoded[:warmup_questions])
    return run(encoded[:questions])


def run_eval(engine, encoder, task, examples: list, n_latents: int, max_new_tokens: int, batch_size: int = 16,
             latency_questions: int = 32, name: str = "", progress=None, intervention=None,
             warmup_questions: int = 4, done: list[PredictionRecord] = (), on_records=None) -> EvalResult:
    """Accuracy (every judge), autoregressive steps, latency at batch 1 and batched throughput.

    Latency is the median wall time per question at batch size 1 over the first ``latency_questions``, timed
    after ``warmup_questions`` untimed ones (so that no mode pays for first-call allocations; the median, because
    on a shared machine a few preempted questions move a mean of 32 by up to 2x, measured); the accuracy and
    throughput come from the batched run over all questions (batched == one-by-one outputs). ``intervention``
    (``ivtlr.engine.Intervention``) applies to every run. ``done`` holds records of an interrupted run (by id):
    those questions are not generated again, and the records come back in the examples' order; ``on_records``
    receives each new batch's records as they finish.
    """
    tokens = engine.backbone.tokens
    finished = {r.id: r for r in done}
    encoded = [encode_example(task, encoder, ex, tokens.image) for ex in examples]
    run = lambda enc, bs, **kw: predict(engine, encoder, enc, n_latents, max_new_tokens, bs,  # noqa: E731
                                        intervention=intervention, **kw)
    lat = []
    if latency_questions and (intervention is None or intervention.state != "shuffle"):  # shuffling needs batches
        lat = time_batch1(engine, encoder, encoded, n_latents, max_new_tokens, intervention, latency_questions,
                          warmup_questions)
    todo = [enc for enc in encoded if enc.id not in finished]
    base = len(encoded) - len(todo)
    t0 = time.perf_counter()
    new = run(todo, batch_size, on_records=on_records,
              progress=None if progress is None else (lambda k, _n: progress(base + k, len(encoded))))
    wall = time.perf_counter() - t0
    fresh = {r.id: r for r in new}
    records = [finished.get(enc.id) or fresh[enc.id] for enc in encoded]
    summary, report = summarize(engine, task, examples, records, lat, wall, len(new), n_latents, max_new_tokens,
                                batch_size, name)
    return EvalResult(summary, records, report, lat, wall, len(new), encoded)


def summarize(engine, task, examples: list, records: list[PredictionRecord], latency: list[PredictionRecord],
              wall: float, n_new: int, n_latents: int, max_new_tokens: int, batch_size: int, name: str = ""):
    """(summary dict, ScoreReport) of records over ``examples``: accuracy per judge, AR steps, the batch-1 latency
    of ``latency``'s records, the throughput of the ``n_new`` questions generated in ``wall`` seconds."""
    report = score_predictions(task, {ex.id: ex for ex in examples}, records)
    summary = {
        "name": name, "n_questions": len(records), "n_latents": n_latents, "max_new_tokens": max_new_tokens,
        "latent": vars(engine.config).copy(),
        "accuracy": {j: report.overall[j].accuracy for j in report.judges},
        "ar_steps": sum(r.n_generated for r in records) / max(1, len(records)),
        "latency_s": statistics.median(r.seconds for r in latency) if latency else float("nan"),
        "throughput_q_per_s": n_new / wall if wall and n_new else float("nan"),
        "resumed": len(records) - n_new,
        "batch_size": batch_size,
        "report": report.to_dict(),
    }
    return summary, report


def prediction_line(task, example, r: PredictionRecord, timing: bool = False) -> str:
    """One line of predictions.jsonl: the task's record (M3CoT's "custom" format) plus what the engine did;
    ``timing`` adds the question's seconds (the streamed partial file, so a resumed run keeps them)."""
    import json

    record = task.to_record(example, r.output)
    record.update({"n_generated": r.n_generated, "selected_patches": r.selected})
    if timing:
        record["seconds"] = r.seconds
    return json.dumps(record) + "\n"


def record_from_line(line: dict) -> PredictionRecord:
    """A PredictionRecord back from a line of ``prediction_line`` (resuming an interrupted evaluation)."""
    return PredictionRecord(str(line["id"]), line["messages"][-1], int(line["n_generated"]),
                            [list(map(int, step)) for step in line["selected_patches"]], float(line.get("seconds", 0)))


def write_outputs(out_dir, task, examples: list, result: EvalResult) -> None:
    """predictions.jsonl (the task's record format; M3CoT's official "custom" JSONL), summary.json, table.md."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    by_id = {ex.id: ex for ex in examples}
    tmp = out / "predictions.jsonl.tmp"
    with tmp.open("w") as f:
        for r in result.records:
            f.write(prediction_line(task, by_id[r.id], r))
    tmp.replace(out / "predictions.jsonl")
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2))
    (out / "table.md").write_text(format_table([result.summary]) + "\n\n" + result.report.format() + "\n")


def format_table(summaries: list[dict]) -> str:
    judges = list(summaries[0]["accuracy"])
    head = "| mode | " + " | ".join(f"accuracy ({j})" for j in judges) + " | AR steps | latency (s/question) | throughput (q/s) |"
    lines = [head, "|" + "---|" * (len(judges) + 4)]
    for s in summaries:
        accs = " | ".join(f"{100 * s['accuracy'][j]:.1f}" for j in judges)
        lines.append(f"| {s['name']} | {accs} | {s['ar_steps']:.1f} | {s['latency_s']:.4f} | {s['throughput_q_per_s']:.1f} |")
    return "\n".join(lines)
