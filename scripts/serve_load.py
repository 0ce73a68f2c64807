"""Load test of ``ivtlr serve``: concurrent clients against a real server, with and without request batching.

    python scripts/serve_load.py --checkpoint runs/demo/ivtlr/checkpoints/step-001565 --data runs/demo/data \\
        --clients 16 --requests 128 --max-batch 1 8 16 --out docs/serving-load.md

For each ``--max-batch`` it starts the app (``ivtlr.serve.make_app``) under uvicorn on a free local port, sends
``--requests`` multipart questions from ``--clients`` threads (each waits for its answer before sending the next),
and reports requests per second, the latency percentiles the clients saw and the engine batch sizes the server
formed. Every answer is checked against answering the same question alone (batched must equal alone).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import torch

from ivtlr.explain import Question, answer, png_bytes
from ivtlr.inference import load_inference
from ivtlr.serve import Limits, make_app, serving


def run_one(inf, examples, reference, max_batch: int, max_wait_ms: float, clients: int, requests: int) -> dict:
    app = make_app(inf, Limits(max_batch=max_batch, max_wait_ms=max_wait_ms))
    with serving(app) as base:
        return _load(app, base + "/api/answer", examples, reference, max_batch, max_wait_ms, clients, requests)


def _load(app, url: str, examples, reference, max_batch: int, max_wait_ms: float, clients: int, requests: int) -> dict:
    bodies = [(png_bytes(ex.image), {"question": ex.question, "choices": "\n".join(ex.choices)}) for ex in examples]
    latencies, mismatches = [], 0
    lock = threading.Lock()

    def client(c: int) -> None:
        nonlocal mismatches
        with httpx.Client(timeout=120) as http:
            for i in range(c, requests, clients):
                png, form = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                r = http.post(url, data=form, files={"image": ("q.png", png, "image/png")})
                dt = time.perf_counter() - t0
                r.raise_for_status()
                body = r.json()
                ref = reference[i % len(reference)]
                with lock:
                    latencies.append(dt)
                    mismatches += (body["output"], body["selected_boxes"]) != ref

    with httpx.Client() as http:  # warm-up
        png, form = bodies[0]
        http.post(url, data=form, files={"image": ("q.png", png, "image/png")}).raise_for_status()
    before = dict(app.state.batches.batch_sizes)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - t0
    sizes = dict(app.state.batches.batch_sizes)
    for k, v in before.items():
        sizes[k] -= v
    lat = sorted(latencies)
    n_batches = sum(sizes.values())
    return {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "clients": clients, "requests": requests,
            "req_per_s": requests / wall, "p50_ms": 1000 * statistics.median(lat),
            "p95_ms": 1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))],
            "mean_batch": requests / max(n_batches, 1), "batches": n_batches, "mismatches": mismatches}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", help="dataset of the questions (default: the run's)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--max-batch", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--max-wait-ms", type=float, default=25.0)
    p.add_argument("--out", help="also write the Markdown table here")
    args = p.parse_args(argv)
    inf = load_inference(args.checkpoint, log=lambda m: print(m, file=sys.stderr))
    examples = list(inf.task.load(args.data or inf.config.data.source, "test"))[:32]
    reference = []
    for ex in examples:
        a = answer(inf, [Question(ex.image, ex.question, list(ex.choices))])[0].to_dict()
        reference.append((a["output"], a["selected_boxes"]))
    rows = [run_one(inf, examples, reference, b, args.max_wait_ms, args.clients, args.requests) for b in args.max_batch]
    given = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    lines = ["# Load test of `ivtlr serve`", "", "Written by `scripts/serve_load.py`; every answer was checked against answering the same question "
             "alone.", "", f"Command: `python scripts/serve_load.py {given}` (max wait {args.max_wait_ms:g} ms). "
             f"Machine: {platform.machine()}, {torch.get_num_threads()} torch "
             f"thread(s), torch {torch.__version__}; {inf.placement}.", "",
             "| max batch | requests/s | p50 latency (ms) | p95 latency (ms) | mean engine batch | answers equal to alone |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['max_batch']} | {r['req_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
                     f"{r['mean_batch']:.1f} | {r['requests'] - r['mismatches']}/{r['requests']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 1 if any(r["mismatches"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
