"""``ivtlr serve [--checkpoint PATH]``: a web page for the model (upload an image, ask, see each step's patches).

    ivtlr serve                                   # the demo's final model (runs/demo), on http://127.0.0.1:8000
    ivtlr serve --checkpoint CKPT --port 8080 --max-batch 16 --max-wait-ms 10
    ivtlr serve --checkpoint model.pth --base Qwen/Qwen2-VL-7B-Instruct --host 0.0.0.0   # reachable from others

It binds 127.0.0.1 unless ``--host`` says otherwise. Concurrent requests are answered in engine batches of at most
``--max-batch`` questions, each batch waiting at most ``--max-wait-ms`` for more after its first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checkpoint import stage_checkpoints
from ..inference import load_inference
from ..serve import Limits, make_app
from .flags import add_checkpoint_flags

DEMO_RUN = Path("runs/demo/ivtlr")


def default_checkpoint(run: Path = DEMO_RUN) -> Path:
    """The demo's final IVT-LR model: the checkpoint at the end of its last stage."""
    stages = stage_checkpoints(run) if run.is_dir() else {}
    if not stages:
        raise SystemExit(f"ivtlr serve: no --checkpoint given and no demo model in {run}/checkpoints. Make one with "
                         "`ivtlr demo` (about 20 minutes on a CPU; `ivtlr demo --quick` for a rough one in about "
                         "1 minute), or pass --checkpoint PATH.")
    return stages[max(stages)]


def main(argv: list[str] | None = None) -> int:
    d = Limits()
    p = argparse.ArgumentParser(prog="ivtlr serve", description=__doc__.split("\n")[0])
    add_checkpoint_flags(p, required=False, default_help=f" (default: the last stage of {DEMO_RUN})")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help=f"questions per engine batch (default {d.max_batch})")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help=f"how long a batch waits for more questions (default {d.max_wait_ms:g})")
    p.add_argument("--max-upload-mib", type=float, default=d.max_upload_bytes / 2**20,
                   help=f"largest upload (default {d.max_upload_bytes / 2**20:g})")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help=f"largest image (default {d.max_pixels:,})")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="answer budget in tokens")
    args = p.parse_args(argv)
    for name in ("max_batch", "port", "max_pixels", "max_new_tokens"):
        if getattr(args, name) < (0 if name == "port" else 1):
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.max_wait_ms < 0 or args.max_upload_mib <= 0:
        p.error("--max-wait-ms must be >= 0 and --max-upload-mib > 0")

    import uvicorn

    checkpoint = args.checkpoint or default_checkpoint()
    inf = load_inference(checkpoint, args.base, device=args.device, dtype=args.dtype,
                         log=lambda m: print(m, file=sys.stderr))
    limits = Limits(max_upload_bytes=int(args.max_upload_mib * 2**20), max_pixels=args.max_pixels,
                    max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_new_tokens=args.max_new_tokens)
    app = make_app(inf, limits)
    print(f"serving {checkpoint} on http://{args.host}:{args.port}/ (batches of <= {limits.max_batch}, "
          f"wait <= {limits.max_wait_ms:g} ms)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
