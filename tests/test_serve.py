"""``ivtlr serve``: the app's answers equal the inference path's, concurrent requests share engine batches, bad uploads
get a message; and the page driven in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from ivtlr.explain import Question, answer, png_bytes
from ivtlr.inference import load_inference
from ivtlr.serve import BadRequest, BatchQueue, Limits, free_port, make_app, read_image, serving
from ivtlr.tasks import get_task

ARTIFACTS = Path(os.environ.get("IVTLR_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


@pytest.fixture(scope="module")
def inf(qwen_checkpoint):
    return load_inference(qwen_checkpoint)


@pytest.fixture(scope="module")
def examples(synth_dir):
    return list(get_task("synth").load(str(synth_dir), "test"))


def test_bad_images_are_named_not_raised():
    limits = Limits(max_upload_bytes=50_000, max_pixels=100 * 100)
    good = png_bytes(Image.new("RGB", (90, 90), "red"))
    assert read_image(good, limits).size == (90, 90)
    cases = {
        b"": "empty",
        b"hello, I am a text file" * 10: "not an image",
        good[: len(good) // 2]: "truncated or corrupt",
        png_bytes(Image.new("RGB", (120, 120))): "14,400 pixels; the limit is 10,000",
        os.urandom(60_000): "limit is",
    }
    for data, message in cases.items():
        with pytest.raises(BadRequest, match=message):
            read_image(data, limits, "'x.png'")


def test_concurrent_questions_share_one_batch_and_match_answering_alone(inf, examples):
    qs = [Question(ex.image, ex.question, list(ex.choices), id=ex.id) for ex in examples[:5]]
    alone = [answer(inf, [q])[0] for q in qs]
    batches = BatchQueue(inf, max_batch=8, max_wait_ms=2000)
    try:
        futures = [None] * len(qs)

        def ask(i):
            futures[i] = batches.submit(qs[i])

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(qs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = [f.result(timeout=60) for f in futures]
    finally:
        batches.close()
    assert batches.batch_sizes == {5: 1}
    for a, b in zip(alone, got):
        assert (a.output, a.selected, a.boxes, a.ar_steps) == (b.output, b.selected, b.boxes, b.ar_steps)


def test_a_full_batch_closes_without_waiting(inf, examples):
    batches = BatchQueue(inf, max_batch=2, max_wait_ms=60_000)
    try:
        q = Question(examples[0].image, examples[0].question, list(examples[0].choices))
        t0 = time.monotonic()
        futures = [batches.submit(q) for _ in range(4)]
        [f.result(timeout=60) for f in futures]
        assert time.monotonic() - t0 < 30
    finally:
        batches.close()
    assert batches.batch_sizes == {2: 2}


def test_the_api_answers_and_refuses_with_messages(inf, examples):
    from fastapi.testclient import TestClient

    ex = examples[0]
    with TestClient(make_app(inf, Limits(max_upload_bytes=200_000, max_wait_ms=0))) as client:
        assert "<form" in client.get("/").text
        form = {"question": ex.question, "choices": "\n".join(ex.choices)}
        r = client.post("/api/answer", data=form, files={"image": ("board.png", png_bytes(ex.image), "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        ref = answer(inf, [Question(ex.image, ex.question, list(ex.choices))])[0]
        assert body["output"] == ref.output and body["selected_boxes"] == ref.to_dict()["selected_boxes"]
        assert body["overlay"].startswith("data:image/png;base64,") and body["ar_steps"] == ref.ar_steps

        def refused(files, data=form, status=400):
            r = client.post("/api/answer", data=data, files=files)
            assert r.status_code == status and "Traceback" not in r.text, r.text
            return r.json()["error"]

        assert "not an image" in refused({"image": ("notes.png", b"plain text, not a picture", "image/png")})
        assert "truncated" in refused({"image": ("cut.png", png_bytes(ex.image)[:300], "image/png")})
        assert "limit" in refused({"image": ("big.png", os.urandom(300_000), "image/png")}, status=413)
        assert "choose an image" in refused({})
        png = {"image": ("board.png", png_bytes(ex.image), "image/png")}
        assert "two options" in refused(png, {"question": "q?", "choices": "only one"})
        assert "type a question" in refused(png, {"question": " ", "choices": "a\nb"})
        assert "at most 26" in refused(png, {"question": "q?", "choices": "\n".join(map(str, range(27)))})
        assert "whole number" in refused(png, {**form, "latents": "two"})
        # K x steps over the image's 9 tokens: the engine's own check, as a message
        assert "image" in refused(png, {**form, "latents": "6"}, status=422).lower()
        stats = client.get("/api/stats").json()
        assert stats["requests"]["answered"] == 1 and stats["requests"]["refused"] == 9


def test_serve_without_a_demo_says_how_to_make_one(tmp_path):
    from ivtlr.commands.serve import default_checkpoint

    with pytest.raises(SystemExit, match="ivtlr demo"):
        default_checkpoint(tmp_path / "runs/demo/ivtlr")


# ------------------------------------------------------------------------------------------------ real browser
def _browser_paths():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("IVTLR_REQUIRE_BROWSER"):
            pytest.fail("IVTLR_REQUIRE_BROWSER is set but chromium / chromedriver are not installed")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    return chromium, driver


@pytest.fixture(scope="module")
def server(qwen_checkpoint):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ivtlr.commands", "serve", "--checkpoint", str(qwen_checkpoint),
                             "--port", str(port), "--max-upload-mib", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ivtlr serve exited: {proc.stdout.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("ivtlr serve did not start within 90 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.browser
def test_the_page_in_headless_chromium(server, examples, tmp_path):
    chromium, driver = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    ex = examples[0]
    board = tmp_path / "board.png"
    ex.image.save(board)
    fake = tmp_path / "notes.png"
    fake.write_text("this is text, not a picture")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(server)
        browser.find_element(By.ID, "image").send_keys(str(board))
        browser.find_element(By.ID, "question").send_keys(ex.question)
        browser.find_element(By.ID, "choices").send_keys("\n".join(ex.choices))
        browser.find_element(By.ID, "submit").click()
        assert not browser.find_element(By.ID, "overlay").is_displayed()  # nothing shown before an answer
        wait.until(EC.visibility_of_element_located((By.ID, "overlay")))
        answer_text = browser.find_element(By.ID, "answer").text
        assert answer_text in [chr(65 + i) for i in range(len(ex.choices))] + ["FAILED"]
        assert "autoregressive steps" in browser.find_element(By.ID, "timing").text
        assert browser.execute_script("return document.getElementById('overlay').naturalWidth") > 0
        steps = browser.find_elements(By.CSS_SELECTOR, "#steps li")
        assert len(steps) == 2 and all("latent step" in s.text for s in steps)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "serve-answer.png"))

        # a bad upload: a message in the page, and the page still works
        browser.find_element(By.ID, "image").clear()
        browser.find_element(By.ID, "image").send_keys(str(fake))
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda b: b.find_element(By.ID, "error").text)
        assert "not an image" in browser.find_element(By.ID, "error").text
        assert not browser.find_element(By.ID, "overlay").is_displayed()
        browser.save_screenshot(str(ARTIFACTS / "serve-bad-upload.png"))
    finally:
        browser.quit()


# ------------------------------------------------------------------------------------------------ hostile input
def _bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid small PNG whose header claims width x height pixels (a decompression bomb's header)."""
    import struct
    import zlib

    data = bytearray(png_bytes(Image.new("RGB", (4, 4))))
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


def test_hostile_clients_get_errors_and_the_server_stays_up(inf, examples):
    ex = examples[0]
    app = make_app(inf, Limits(max_upload_bytes=100_000, max_pixels=512 * 512, max_batch=8, max_wait_ms=20))
    with serving(app, log_level="error") as base:
        _hostile_clients(base, ex)


def _hostile_clients(base: str, ex) -> None:
    """100 concurrent clients, most of them hostile, against the server at ``base``."""
    import resource

    import httpx

    url = base + "/api/answer"
    form = {"question": ex.question, "choices": "\n".join(ex.choices)}
    png = png_bytes(ex.image)
    kinds = {
        "good": dict(data=form, files={"image": ("b.png", png, "image/png")}),
        "bomb": dict(data=form, files={"image": ("bomb.png", _bomb(), "image/png")}),
        "huge": dict(data=form, files={"image": ("big.png", os.urandom(300_000), "image/png")}),
        "text": dict(data=form, files={"image": ("t.png", b"not an image at all", "image/png")}),
        "json": dict(json={"question": "q", "choices": ["a", "b"]}),
        "garbage": dict(content=b"--xx\r\nnot a form", headers={"content-type": "multipart/form-data; boundary=xx"}),
        "noform": dict(data={"question": "q"}),
    }
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results: list[tuple[str, int, dict]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        kind = list(kinds)[i % len(kinds)]
        with httpx.Client(timeout=120) as http:
            r = http.post(url, **kinds[kind])
        with lock:
            results.append((kind, r.status_code, r.json()))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(results) == 100
    for kind, status, body in results:
        if kind == "good":
            assert status == 200 and body["overlay"].startswith("data:image/png"), body
        else:
            assert 400 <= status < 500 and body["error"] and "Traceback" not in body["error"], (kind, status, body)
    assert any("pixels" in b["error"] for k, _, b in results if k == "bomb")
    with httpx.Client() as http:  # still up, and it grouped the good questions into batches
        assert http.get(f"{base}/api/health").json()["ok"]
        stats = http.get(f"{base}/api/stats").json()
    assert stats["requests"]["answered"] == sum(k == "good" for k, _, _ in results)
    assert max(int(k) for k in stats["batch_sizes"]) > 1
    assert grown_mib < 400, f"peak memory grew by {grown_mib:.0f} MiB"
