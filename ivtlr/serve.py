"""A web page for a checkpoint: upload an image, ask a multiple-choice question, see the answer and the patches
each latent step looked at.

``make_app(inf, limits)`` is a small FastAPI app over the one inference path (``ivtlr.explain.answer``):

- ``GET /`` the page (one self-contained HTML file, no external assets, so it works offline);
- ``POST /api/answer`` (multipart: ``image``, ``question``, ``choices`` one per line, optional ``latents``) returns
  the answer, the autoregressive steps, the latency, the selected cells and boxes per step and the overlay as a
  PNG data URL; a bad request returns ``{"error": message}`` with a 4xx status, never a traceback;
- ``GET /api/health``, ``GET /api/stats`` (requests, engine batches, the batch-size histogram).

Concurrent requests are grouped into engine batches by ``BatchQueue``: the first request opens a batch, which
closes when it holds ``max_batch`` questions or ``max_wait_ms`` after it opened, then runs as one
``engine.generate`` call. A batch that fails is re-run one question at a time, so one bad question fails alone.

FastAPI rather than Gradio: the page is one form and one picture, and the app starts in a fraction of the time
(measured in docs/serving.md), which keeps the real-browser test in the default test run.
"""

from __future__ import annotations

import base64
import io
import logging
import queue
import socket
import threading
import time
from collections import Counter
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile

from .explain import Answer, Question, answer, overlay, png_bytes
from .inference import Inference

log = logging.getLogger("ivtlr.serve")


class BadRequest(ValueError):
    """A request the server refuses, with the message the page shows and the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 8 * 2**20  # the whole request body
    max_pixels: int = 4096 * 4096  # checked from the header, before the image is decoded
    max_question_chars: int = 2000
    max_choices: int = 26  # option letters A-Z
    max_choice_chars: int = 300
    max_batch: int = 8  # questions per engine batch
    max_wait_ms: float = 25.0  # how long a batch waits for more questions after its first
    max_new_tokens: int = 32


def read_image(data: bytes, limits: Limits, name: str = "the upload") -> Image.Image:
    """Decode an uploaded image, or raise BadRequest saying what is wrong with it."""
    if not data:
        raise BadRequest(f"{name} is empty: choose an image file")
    if len(data) > limits.max_upload_bytes:
        raise BadRequest(f"{name} is {len(data) / 2**20:.1f} MiB; the limit is "
                         f"{limits.max_upload_bytes / 2**20:.1f} MiB", 413)
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadRequest(f"{name} is not an image this server can read (PNG, JPEG, GIF, BMP, WebP)") from None
    except Image.DecompressionBombError as err:
        raise BadRequest(f"{name} has too many pixels: {err}", 413) from None
    except Exception as err:  # noqa: BLE001  (Pillow raises OSError, ValueError, AttributeError on bad headers)
        raise BadRequest(f"{name} is not a readable image: its header is corrupt ({err})") from None
    w, h = image.size
    if w * h > limits.max_pixels:
        raise BadRequest(f"{name} is {w}x{h} = {w * h:,} pixels; the limit is {limits.max_pixels:,}", 413)
    try:
        image.load()
    except Image.DecompressionBombError as err:
        raise BadRequest(f"{name} has too many pixels: {err}", 413) from None
    except Exception as err:  # noqa: BLE001  (truncated or corrupt data: OSError, SyntaxError, ValueError, ...)
        raise BadRequest(f"{name} is truncated or corrupt ({err})") from None
    return image.convert("RGB")


def parse_question(image: Image.Image, question: str, choices: str, limits: Limits) -> Question:
    question = (question or "").strip()
    options = [c.strip() for c in (choices or "").splitlines() if c.strip()]
    if not question:
        raise BadRequest("type a question")
    if len(question) > limits.max_question_chars:
        raise BadRequest(f"the question has {len(question)} characters; the limit is {limits.max_question_chars}")
    if len(options) < 2:
        raise BadRequest("give at least two options, one per line")
    if len(options) > limits.max_choices:
        raise BadRequest(f"{len(options)} options; at most {limits.max_choices} (letters A-Z)")
    if any(len(c) > limits.max_choice_chars for c in options):
        raise BadRequest(f"an option is longer than {limits.max_choice_chars} characters")
    return Question(image, question, options, id="upload")


# ------------------------------------------------------------------------------------------------ batching
@dataclass
class _Job:
    question: Question
    n_latents: int | None
    future: Future = field(default_factory=Future)


class BatchQueue:
    """Groups questions from concurrent requests into engine batches (one worker thread owns the model)."""

    def __init__(self, inf: Inference, max_batch: int = 8, max_wait_ms: float = 25.0, max_new_tokens: int = 32):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0 (got {max_batch}, {max_wait_ms})")
        self.inf, self.max_batch, self.max_wait, self.max_new_tokens = inf, max_batch, max_wait_ms / 1000, max_new_tokens
        self.batch_sizes: Counter[int] = Counter()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="ivtlr-batches", daemon=True)
        self._worker.start()

    def submit(self, question: Question, n_latents: int | None = None) -> Future:
        job = _Job(question, n_latents)
        self._jobs.put(job)
        return job.future

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join(timeout=30)

    def _collect(self, first: _Job) -> list[_Job]:
        jobs, deadline = [first], time.monotonic() + self.max_wait
        while len(jobs) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._jobs.get(timeout=max(left, 0)) if left > 0 else self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:  # closing: finish this batch first
                self._jobs.put(None)
                break
            jobs.append(job)
        return jobs

    def _run(self) -> None:
        while (first := self._jobs.get()) is not None:
            jobs = self._collect(first)
            # one batch per latent count (a request may ask for another number of steps)
            for n in dict.fromkeys(j.n_latents for j in jobs):
                self._answer([j for j in jobs if j.n_latents == n], n)

    def _answer(self, jobs: list[_Job], n_latents: int | None) -> None:
        try:
            results = answer(self.inf, [j.question for j in jobs], n_latents, self.max_new_tokens)
        except Exception as err:  # noqa: BLE001  (re-run alone, so only the failing question fails)
            if len(jobs) > 1:
                for j in jobs:
                    self._answer([j], n_latents)
                return
            jobs[0].future.set_exception(err)
            return
        self.batch_sizes[len(jobs)] += 1
        for j, res in zip(jobs, results):
            j.future.set_result(res)


# ------------------------------------------------------------------------------------------------ the app
async def read_request(request, limits: Limits, max_latents: int) -> tuple[Question, int | None]:
    """The question and latent steps of an ``/api/answer`` request; BadRequest says what is wrong with it."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limits.max_upload_bytes + 64 * 1024:
        raise BadRequest(f"the upload is {int(size) / 2**20:.1f} MiB; the limit is "
                         f"{limits.max_upload_bytes / 2**20:.1f} MiB", 413)
    try:
        form = await request.form(max_part_size=limits.max_upload_bytes + 1)
    except Exception as err:  # noqa: BLE001  (malformed multipart, a part over the limit)
        raise BadRequest(f"could not read the form: {err}", 413 if "size" in str(err).lower() else 400) from None
    upload = form.get("image")
    if not isinstance(upload, UploadFile):
        raise BadRequest("choose an image file")
    image = read_image(await upload.read(limits.max_upload_bytes + 1), limits, repr(upload.filename or "the upload"))
    q = parse_question(image, str(form.get("question", "")), str(form.get("choices", "")), limits)
    n = str(form.get("latents") or "").strip()
    if n and not n.isdigit():
        raise BadRequest("latent steps must be a whole number")
    if n and int(n) > max_latents:
        raise BadRequest(f"latent steps must be between 0 and {max_latents}")
    return q, int(n) if n else None


def answer_json(ans: Answer) -> dict:
    out = ans.to_dict()
    out["overlay"] = "data:image/png;base64," + base64.b64encode(png_bytes(overlay(ans.question.image, ans.boxes))).decode()
    out["ms"] = round(1000 * ans.seconds, 1)
    return out


def make_app(inf: Inference, limits: Limits = Limits(), title: str = "IVT-LR"):
    """The FastAPI app serving ``inf``; its ``state.batches`` is the BatchQueue (closed on shutdown)."""
    batches = BatchQueue(inf, limits.max_batch, limits.max_wait_ms, limits.max_new_tokens)
    max_latents = max(inf.config.curriculum.max_latent_stage, 8)

    @asynccontextmanager
    async def lifespan(app):
        yield
        batches.close()

    app = FastAPI(title=title, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batches = batches
    app.state.requests = Counter()

    def error(message: str, status: int = 400) -> JSONResponse:
        app.state.requests["refused"] += 1
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def page():
        return PAGE.replace("{{title}}", title).replace("{{checkpoint}}", str(inf.path)).replace(
            "{{latents}}", str(inf.config.curriculum.max_latent_stage)).replace(
            "{{max_mib}}", f"{limits.max_upload_bytes / 2**20:g}")

    @app.get("/api/health")
    def health():
        return {"ok": True, "checkpoint": str(inf.path), "backbone": inf.family.name,
                "device": str(inf.placement.device), "dtype": str(inf.placement.dtype).removeprefix("torch.")}

    @app.get("/api/stats")
    def stats():
        sizes = batches.batch_sizes
        return {"requests": dict(app.state.requests), "batches": sum(sizes.values()),
                "batch_sizes": {str(k): v for k, v in sorted(sizes.items())}}

    @app.post("/api/answer")
    async def answer_route(request: Request):
        app.state.requests["received"] += 1
        try:
            q, n_latents = await read_request(request, limits, max_latents)
        except BadRequest as err:
            return error(str(err), err.status)
        try:
            ans = await run_in_threadpool(batches.submit(q, n_latents).result)
        except ValueError as err:  # the engine's own checks (e.g. K x steps over the image's tokens)
            return error(str(err), 422)
        except Exception as err:  # noqa: BLE001
            log.exception("answering failed")
            app.state.requests["failed"] += 1
            return JSONResponse({"error": f"the model failed on this question ({type(err).__name__}); "
                                          "the server log has the details"}, status_code=500)
        app.state.requests["answered"] += 1
        return answer_json(ans)

    return app


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (for a server started right after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def serving(app, host: str = "127.0.0.1", log_level: str = "warning"):
    """Run ``app`` under uvicorn in a background thread on a free port; yields its base URL; stops it on exit."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=free_port(host), log_level=log_level))
    thread = threading.Thread(target=server.run, name="ivtlr-serve", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server stopped while starting (see its log)")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{title}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:60em;padding:0 1em;color:#222}
label{display:block;margin:.6em 0 .2em;font-weight:600} input[type=text],textarea{width:100%;box-sizing:border-box;
font:inherit;padding:.3em} button{margin-top:.8em;font:inherit;padding:.4em 1.2em} #error{color:#b00020;
margin-top:1em;font-weight:600} #result{display:flex;gap:1.5em;margin-top:1em;flex-wrap:wrap} [hidden]{display:none!important}
#overlay{max-width:336px;border:1px solid #ccc} .muted{color:#666;font-size:.9em} li{margin:.15em 0}
</style></head><body>
<h1>{{title}}: what the model looked at while it reasoned in the dark</h1>
<p class="muted">checkpoint <code>{{checkpoint}}</code>. Each latent step re-inserts the image patches it attends to
most; the picture outlines them, one colour per step, labelled step.rank.</p>
<form id="ask">
<label for="image">image (at most {{max_mib}} MiB)</label><input id="image" name="image" type="file" accept="image/*">
<label for="question">question</label><input id="question" name="question" type="text">
<label for="choices">options, one per line</label><textarea id="choices" name="choices" rows="4"></textarea>
<label for="latents">latent steps</label><input id="latents" name="latents" type="number" min="0" value="{{latents}}">
<button id="submit" type="submit">Answer</button>
</form>
<div id="error" role="alert"></div>
<div id="result" hidden>
<img id="overlay" alt="the image with the selected patches">
<div><p>answer: <b id="answer"></b></p><p class="muted" id="generated"></p>
<p id="timing"></p><ol id="steps"></ol></div>
</div>
<script>
const COLOURS = ["#e69f00","#56b4e9","#009e73","#f0e442","#0072b2","#d55e00","#cc79a7","#000000"];
const $ = id => document.getElementById(id);
$("ask").addEventListener("submit", async ev => {
  ev.preventDefault();
  $("error").textContent = ""; $("result").hidden = true; $("submit").disabled = true;
  try {
    const resp = await fetch("api/answer", {method: "POST", body: new FormData($("ask"))});
    let body;
    try { body = await resp.json(); } catch (e) { body = {error: "the server answered " + resp.status}; }
    if (!resp.ok || body.error) { $("error").textContent = body.error || ("error " + resp.status); return; }
    $("answer").textContent = body.prediction;
    $("generated").textContent = "generated: " + JSON.stringify(body.output.trim());
    $("timing").textContent = body.ar_steps + " autoregressive steps, " + body.ms + " ms";
    $("steps").innerHTML = "";
    body.selected_cells.forEach((cells, t) => {
      const li = document.createElement("li");
      li.style.color = COLOURS[t % COLOURS.length];
      li.textContent = "latent step " + (t + 1) + ": cells " + cells.map(c => "(" + c[0] + "," + c[1] + ")").join(" ");
      $("steps").appendChild(li);
    });
    $("overlay").src = body.overlay;
    $("result").hidden = false;
  } catch (e) {
    $("error").textContent = "could not reach the server: " + e;
  } finally { $("submit").disabled = false; }
});
</script></body></html>
"""
