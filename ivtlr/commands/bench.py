"""``ivtlr bench``: what the latent machinery costs, against plain transformers ``generate``.

On a tiny random Qwen2-VL (defaults: hidden 256, 4 layers, 224x224 images = 64 image tokens, 3 latent
steps, K = 8, 16 new tokens), it times, from the same prompts:

- ``ivtlr``: this engine (prefill, n latent passes of K + 1 embeddings on the KV cache, 16 decoded tokens);
- ``ivtlr-compiled``: the same with ``decode="compiled"`` (a static-shape KV cache and the decode step under
  ``torch.compile``; CUDA graphs on a GPU); its compile time (the warm-up calls) is reported beside it;
- ``hf-generate``: plain ``model.generate`` producing n + 16 tokens (the same number of sequential passes);
- ``recompute``: this engine without the KV cache, the authors' schedule (the whole prefix per latent pass);
- ``prefill``: only the part every method shares, the vision tower and the prompt's forward pass. Its time bounds
  what any decode can gain: at batch N no method is faster than hf-generate by more than hf-generate / prefill.

Per-question latency at batch 1 and throughput at the batch size; peak memory per method, each measured in a
fresh process (RSS on CPU, ``max_memory_allocated`` on CUDA). A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch

from ..attention import register_lastrow_backend
from ..backbones import PRESETS, QWEN_7B_IDS, backbone_for, build_preset, family_of
from ..batching import Sample, collate
from ..cliargs import add_dataclass_flags, dataclass_from_args
from ..engine import LatentConfig, LatentEngine
from ..placement import describe_cpu, place
from ..backbones.qwen2vl import TINY_QWEN_IDS, TinyQwen2VLSpec, build_tiny_qwen2vl


@dataclass
class BenchConfig:
    hidden_size: int = 256
    """Language model width."""
    num_layers: int = 4
    """Language model depth."""
    num_heads: int = 8
    """Attention heads."""
    num_kv_heads: int = 2
    """Key/value heads."""
    image_size: int = 224
    """Square image side in pixels (28 px per image token after the 2x2 merge)."""
    prompt_tokens: int = 40
    """Text tokens around the image."""
    latents: int = 3
    """Latent steps n."""
    k: int = 8
    """Image tokens re-inserted per latent step."""
    new_tokens: int = 16
    """Tokens decoded after the latent steps."""
    batch: int = 16
    """Batch size of the throughput run."""
    repeats: int = 15
    """Timed runs per measurement (the median is reported); one warm-up round first."""
    device: str = "auto"
    """cpu, cuda, or auto (the first GPU, else the CPU)."""
    dtype: str = "auto"
    """float32, bfloat16, or auto (bfloat16 on a GPU that supports it, else float32)."""
    threads: int = 0
    """CPU threads (0: torch's default)."""
    train: bool = False
    """Time one training step (forward + backward, stage-3 sequences) instead of generation."""
    train_batch: int = 8
    """Batch size of the training-step benchmark."""
    rest_tokens: int = 24
    """Training benchmark: teacher-forced tokens after the latents (remaining steps + answer)."""
    preset: str | None = None
    """A released architecture instead of the tiny model (qwen2-vl-7b, qwen2.5-vl-7b), random weights."""
    preset_layers: int | None = None
    """With --preset: cut the language model to this many decoder layers (a small machine's check)."""
    lora: bool = False
    """Training benchmark: LoRA r=64 on the language model as the authors (default for a preset)."""
    gradient_checkpointing: bool = False
    """Training benchmark: layer checkpointing (the engine then recomputes the prefix per pass)."""

    def __post_init__(self):
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ValueError(f"unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
            if PRESETS[self.preset].family.name not in ("qwen2-vl", "qwen2.5-vl"):
                raise ValueError(f"ivtlr bench builds Qwen-family inputs; preset {self.preset!r} is "
                                 f"{PRESETS[self.preset].family.name} (not benchmarked yet)")
        if self.image_size % 28:
            raise ValueError(f"image_size must be a multiple of 28 (one image token per 28x28 pixels), got {self.image_size}")
        if self.k * self.latents > (self.image_size // 28) ** 2:
            raise ValueError(f"K x latents = {self.k * self.latents} exceeds the {(self.image_size // 28) ** 2} image tokens")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError("dtype must be auto, float32 or bfloat16")
        where = place(self.dtype, None if self.device == "auto" else self.device)  # the project's device/dtype policy
        self.device, self.dtype = str(where.device), str(where.dtype).replace("torch.", "")
        self.placement = str(where)


METHODS = ("ivtlr", "ivtlr-compiled", "hf-generate", "recompute", "prefill")


def _model(cfg: BenchConfig):
    """The benchmarked model (random weights) and its special ids, text-token range."""
    dtype = getattr(torch, cfg.dtype)
    if cfg.preset:
        return build_preset(cfg.preset, cfg.preset_layers, device=cfg.device, dtype=dtype), QWEN_7B_IDS, 151643
    spec = TinyQwen2VLSpec(hidden_size=cfg.hidden_size, intermediate_size=2 * cfg.hidden_size,
                           num_layers=cfg.num_layers, num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads)
    return build_tiny_qwen2vl(spec, TINY_QWEN_IDS).to(cfg.device, dtype), TINY_QWEN_IDS, spec.vocab_size


def _setup(cfg: BenchConfig, never_stop: bool = True, built=None):
    model, ids, vocab_size = built or _model(cfg)
    side = cfg.image_size // 14
    n_img = (cfg.image_size // 28) ** 2
    g = torch.Generator().manual_seed(0)

    def question(i: int, latents: int, rest: int = 0) -> Sample:
        text = torch.randint(10, vocab_size, (cfg.prompt_tokens + rest,), generator=g).tolist()
        prompt = text[:4] + [ids.vision_start] + [ids.image_pad] * n_img + [ids.vision_end] + text[4:cfg.prompt_tokens]
        vision = {"pixel_values": torch.randn(side * side, 1176, generator=g),
                  "image_grid_thw": torch.tensor([[1, side, side]])}
        tail = text[cfg.prompt_tokens:]
        labels = [-100] * (len(prompt) + latents) + tail if rest else None
        return Sample(prompt + [ids.latent] * latents + tail, len(prompt), labels, vision, id=str(i))

    # eos -1 is never produced, so the engine decodes exactly new_tokens (generate gets min_new_tokens instead)
    tokens = ids.token_ids()
    backbone = backbone_for(model, replace(tokens, eos=-1) if never_stop else tokens)

    def batch(size: int, latents: int, rest: int = 0):
        b = collate([question(i, latents, rest) for i in range(size)], ids.pad).to(cfg.device)
        b.vision["pixel_values"] = b.vision["pixel_values"].to(getattr(torch, cfg.dtype))
        return b

    return backbone, batch


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _runner(cfg: BenchConfig, method: str, backbone, engine):
    """A closure running one method on a batch."""
    if method == "hf-generate":
        return lambda b: backbone.hf_generate(b.input_ids, b.attention_mask, b.vision, cfg.latents + cfg.new_tokens)
    if method == "recompute":
        slow = LatentEngine(engine.backbone, LatentConfig(k=cfg.k, use_cache=False))
        return lambda b: slow.generate(b, cfg.new_tokens)
    if method == "ivtlr-compiled":
        compiled = LatentEngine(engine.backbone, LatentConfig(k=cfg.k, decode="compiled"))
        return lambda b: compiled.generate(b, cfg.new_tokens)
    if method == "prefill":  # what every method starts with: the vision tower and the prompt's forward pass
        return lambda b: engine._prefill(b, engine._layout(b))
    return lambda b: engine.generate(b, cfg.new_tokens)


TRAIN_METHODS = ("ivtlr", "recompute")


def _train_runner(cfg: BenchConfig, method: str, backbone):
    engine = LatentEngine(backbone, LatentConfig(k=cfg.k, use_cache=method == "ivtlr"))

    def step(b):
        backbone.model.zero_grad(set_to_none=True)
        engine.forward(b).loss.backward()

    return step


def _for_training(cfg: BenchConfig, backbone) -> None:
    """LoRA (the authors' r=64 on the language model) and layer checkpointing, as the config asks."""
    if cfg.lora or cfg.preset:
        from peft import get_peft_model

        peft = get_peft_model(backbone.hf, family_of(backbone.hf).lora_config(64, 16, 0.05))
        backbone.model = peft  # the engine runs the wrapped model; the adapter is the only trainable part
    if cfg.gradient_checkpointing:
        backbone.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        backbone.hf.enable_input_require_grads()
    backbone.model.train()


def _time_train(cfg: BenchConfig) -> dict:
    """Median time of one training step per method (interleaved, one process)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    backbone, make_batch = _setup(cfg)
    _for_training(cfg, backbone)
    batch = make_batch(cfg.train_batch, cfg.latents, cfg.rest_tokens)
    runs = {m: _train_runner(cfg, m, backbone) for m in TRAIN_METHODS}
    times = {m: [] for m in TRAIN_METHODS}
    for rep in range(cfg.repeats + 1):
        for m in TRAIN_METHODS:
            _sync(cfg.device)
            t0 = time.perf_counter()
            runs[m](batch)
            _sync(cfg.device)
            if rep:
                times[m].append(time.perf_counter() - t0)
    return {m: {"step_s": statistics.median(times[m])} for m in TRAIN_METHODS}


def _time_all(cfg: BenchConfig) -> dict:
    """Median wall time of every method at batch 1 and ``cfg.batch``, measured in one process with the methods
    interleaved run by run, so that machine noise hits them alike."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    built = _model(cfg)
    backbone, make_batch = _setup(cfg, built=built)
    hf_backbone, _ = _setup(cfg, never_stop=False, built=built)  # the same weights; eos only matters to generate
    engine = LatentEngine(backbone, LatentConfig(k=cfg.k))
    runs = {m: _runner(cfg, m, hf_backbone if m == "hf-generate" else backbone, engine) for m in METHODS}
    out = {m: {"warmup_s": 0.0} for m in METHODS}
    with torch.inference_mode():
        for size in (1, cfg.batch):
            batches = {m: make_batch(size, 0 if m == "hf-generate" else cfg.latents) for m in METHODS}
            times = {m: [] for m in METHODS}
            for rep in range(cfg.repeats + 1):  # the first round warms up (and compiles)
                for m in METHODS:
                    # the baseline runs plain sdpa; the engine its last-row capture backend (outside the timing)
                    backend = "sdpa" if m == "hf-generate" else register_lastrow_backend()
                    backbone.hf.set_attn_implementation({"text_config": backend, "vision_config": "sdpa"})
                    _sync(cfg.device)
                    t0 = time.perf_counter()
                    runs[m](batches[m])
                    _sync(cfg.device)
                    if rep:
                        times[m].append(time.perf_counter() - t0)
                    else:
                        out[m]["warmup_s"] += time.perf_counter() - t0
            for m in METHODS:
                out[m][f"b{size}_s"] = statistics.median(times[m])
    return out


def _peak_memory(cfg: BenchConfig, method: str) -> dict:
    """Run in a fresh process: one batch of ``cfg.batch`` questions; the process's peak memory."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    backbone, make_batch = _setup(cfg, never_stop=method != "hf-generate")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cfg.train:
        _for_training(cfg, backbone)
        _train_runner(cfg, method, backbone)(make_batch(cfg.train_batch, cfg.latents, cfg.rest_tokens))
    else:
        run = _runner(cfg, method, backbone, LatentEngine(backbone, LatentConfig(k=cfg.k)))
        with torch.inference_mode():
            run(make_batch(cfg.batch, 0 if method == "hf-generate" else cfg.latents))
    if cfg.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
        return {"peak_mem_mb": peak, "run_mem_mb": peak - torch.cuda.memory_allocated() / 2**20,
                "mem_kind": "cuda allocated"}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mem_mb": peak, "run_mem_mb": peak - before, "mem_kind": "process RSS"}


def _child(cfg_dict, method, queue):
    try:
        queue.put(_peak_memory(BenchConfig(**cfg_dict), method))
    except Exception as err:  # report instead of hanging the parent
        queue.put({"error": f"{type(err).__name__}: {err}"})


def run_bench(cfg: BenchConfig) -> dict:
    """Time every method (interleaved, one process), then measure each one's peak memory in its own process."""
    ctx = mp.get_context("spawn")
    results = {}
    for method in TRAIN_METHODS if cfg.train else METHODS:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(asdict(cfg), method, queue))
        proc.start()
        res = queue.get()
        proc.join()
        if "error" in res:
            raise RuntimeError(f"bench {method}: {res['error']}")
        results[method] = res
    if cfg.train:
        for method, t in _time_train(cfg).items():
            results[method]["step_ms"] = t["step_s"] * 1000
        for res in results.values():
            res["time_vs_recompute"] = res["step_ms"] / results["recompute"]["step_ms"]
            res["memory_vs_recompute"] = res["run_mem_mb"] / results["recompute"]["run_mem_mb"]
        return {"config": asdict(cfg), "machine": _machine(cfg), "results": results}
    key = "throughput_q_per_s_b%d" % cfg.batch
    for method, t in _time_all(cfg).items():
        results[method]["latency_ms_b1"] = t["b1_s"] * 1000
        results[method][key] = cfg.batch / t[f"b{cfg.batch}_s"]
        results[method]["warmup_s"] = t["warmup_s"]  # the two untimed first calls (batch 1 and batch N)
    base = results["hf-generate"]["latency_ms_b1"]
    for res in results.values():
        res["latency_vs_hf_generate"] = res["latency_ms_b1"] / base
        res["throughput_vs_hf_generate"] = res[key] / results["hf-generate"][key]
    return {
        "config": asdict(cfg),
        "machine": _machine(cfg),
        "results": results,
    }


def _machine(cfg: BenchConfig) -> dict:
    return {"platform": platform.platform(), "processor": describe_cpu(),
            "torch": torch.__version__, "threads": cfg.threads or torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if cfg.device.startswith("cuda") else "cpu",
            "placement": getattr(cfg, "placement", "")}


def _model_name(cfg: dict) -> str:
    if cfg["preset"]:
        cut = f" cut to {cfg['preset_layers']} layer(s)" if cfg["preset_layers"] else ""
        return f"{cfg['preset']} architecture{cut} (random weights)"
    return f"tiny Qwen2-VL hidden {cfg['hidden_size']}, {cfg['num_layers']} layers"


def format_report(report: dict) -> str:
    cfg = report["config"]
    if cfg["train"]:
        lines = [f"ivtlr bench --train: one training step (forward + backward), batch {cfg['train_batch']}, "
                 f"{cfg['latents']} latent steps, K={cfg['k']}, {cfg['rest_tokens']} supervised tokens, {_model_name(cfg)}, "
                 f"{'LoRA r64, ' if cfg['lora'] or cfg['preset'] else ''}"
                 f"{'layer checkpointing, ' if cfg['gradient_checkpointing'] else ''}"
                 f"{(cfg['image_size'] // 28) ** 2} image tokens, "
                 f"{cfg['device']} {cfg['dtype']}, {report['machine']['threads']} threads",
                 f"{'method':<12}{'step (ms)':>12}{'x recompute':>14}{'peak mem (MB)':>16}{'step mem (MB)':>16}"
                 f"{'x recompute':>14}"]
        for name, r in report["results"].items():
            lines.append(f"{name:<12}{r['step_ms']:>12.1f}{r['time_vs_recompute']:>14.2f}{r['peak_mem_mb']:>16.0f}"
                         f"{r['run_mem_mb']:>16.0f}{r['memory_vs_recompute']:>14.2f}")
        if cfg["gradient_checkpointing"]:
            lines.append("With layer checkpointing the KV cache cannot be kept, so both methods re-run the prefix per "
                         "latent pass (the engine switches to it by itself); the rows differ only by noise.")
        lines.append("recompute = the authors' schedule (the whole prefix re-run per latent pass), with sdpa. "
                     f"Memory: {next(iter(report['results'].values()))['mem_kind']}, one process per method; step mem = "
                     "peak minus the footprint before the step (model, inputs, libraries).")
        return "\n".join(lines)
    lines = [
        f"ivtlr bench: {_model_name(cfg)}, "
        f"{cfg['image_size']}px image = {(cfg['image_size'] // 28) ** 2} image tokens, n={cfg['latents']}, "
        f"K={cfg['k']}, {cfg['new_tokens']} new tokens, {cfg['device']} {cfg['dtype']}, "
        f"{report['machine']['threads']} threads",
        f"{'method':<16}{'latency b=1 (ms)':>18}{'x hf-generate':>15}{'q/s b=' + str(cfg['batch']):>12}"
        f"{'x hf-generate':>15}{'warm-up (s)':>13}{'peak mem (MB)':>16}",
    ]
    key = "throughput_q_per_s_b%d" % cfg["batch"]
    for name, r in report["results"].items():
        lines.append(f"{name:<16}{r['latency_ms_b1']:>18.1f}{r['latency_vs_hf_generate']:>15.2f}"
                     f"{r[key]:>12.1f}{r['throughput_vs_hf_generate']:>15.2f}{r['warmup_s']:>13.1f}"
                     f"{r['peak_mem_mb']:>16.0f}")
    shared = report["results"].get("prefill")
    if shared:
        hf = report["results"]["hf-generate"]
        lines.append(f"prefill = the vision tower and the prompt's forward pass alone, which every method starts "
                     f"with: {hf[key] / shared[key]:.0%} of hf-generate's time at batch {cfg['batch']}, "
                     f"{shared['latency_ms_b1'] / hf['latency_ms_b1']:.0%} at batch 1. So no decode, however fast, "
                     f"exceeds {shared[key] / hf[key]:.2f}x hf-generate's throughput at batch {cfg['batch']} here.")
    lines.append("hf-generate decodes n + new tokens from the prompt alone; recompute = the authors' schedule "
                 "(no KV cache); ivtlr-compiled = decode='compiled' (static KV cache, torch.compile'd decode step), "
                 "its warm-up = the compile time (first call at batch 1 and at batch N). "
                 f"Memory: {report['results']['ivtlr']['mem_kind']}, one process per method.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="ivtlr bench", description=__doc__.split("\n")[0])
    add_dataclass_flags(parser, BenchConfig)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = run_bench(dataclass_from_args(args, BenchConfig))
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
