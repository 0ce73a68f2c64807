"""``lmms-eval --model ivtlr`` for real, offline: the CLI finds the model through its entry point, runs latent
generation on small local tasks in lmms-eval's format (ours: M3CoT's schema and official judge; lmms-eval's own
``scienceqa_img`` functions on a local copy in ScienceQA's schema), and gives what ivtlr's own path gives."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk

from ivtlr.explain import generate_prompts
from ivtlr.inference import load_inference
from ivtlr.lmms import TASKS_DIR
from ivtlr.tasks import get_task
from ivtlr.tasks.scoring import sqa_prediction

# not imported here: lmms-eval's task module sets PIL's LOAD_TRUNCATED_IMAGES for the whole process on import,
# which would let truncated uploads through in the other tests of this process
if importlib.util.find_spec("lmms_eval") is None:
    if os.environ.get("IVTLR_REQUIRE_LMMS"):
        raise ImportError("IVTLR_REQUIRE_LMMS is set but lmms-eval is not installed")
    pytest.skip("needs the [lmms] extra and `pip install --no-deps lmms-eval==0.7.3`", allow_module_level=True)


def lmms_run(tmp_path: Path, checkpoint: Path, task: str, include: Path, *model_args: str) -> list[dict]:
    """Run the lmms-eval CLI; return the logged samples of ``task`` (checks the results file too)."""
    out = tmp_path / "out"
    args = ",".join([f"checkpoint={checkpoint}", *model_args])
    done = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "ivtlr", "--model_args", args, "--tasks", task,
                           "--include_path", str(include), "--output_path", str(out), "--batch_size", "4",
                           "--log_samples", "--verbosity", "DEBUG"],  # DEBUG: a failed evaluation exits non-zero
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    results = list(out.rglob("*_results.json"))
    assert len(results) == 1, done.stdout[-2000:]
    samples = list(out.rglob(f"*_samples_{task}.jsonl"))
    rows = [json.loads(line) for line in samples[0].read_text().splitlines() if line]
    return sorted(rows, key=lambda r: r["doc_id"]), json.loads(results[0].read_text())["results"][task]


def response(sample: dict) -> str:
    r = sample["filtered_resps"]
    return r if isinstance(r, str) else r[0]


def local_task(folder: Path, source: Path, name: str, data: Path, yaml_file: str | None = None) -> Path:
    """A copy of a task (``yaml_file`` of ``source``, its only YAML by default, with its Python files) under another
    name that reads ``data`` with load_from_disk."""
    folder.mkdir(parents=True)
    for f in source.iterdir():
        if f.suffix == ".py":
            shutil.copy(f, folder / f.name)
    yaml_text = (source / yaml_file if yaml_file else next(source.glob("*.yaml"))).read_text()
    lines = []
    for line in yaml_text.splitlines():
        if line.startswith("task:"):
            line = f"task: {name}"
        elif line.startswith("dataset_path:"):
            line = f"dataset_path: {data}\ndataset_kwargs:\n  load_from_disk: true"
        elif line.startswith("dataset_name:") or line.startswith("  token:") or line.startswith("dataset_kwargs:"):
            continue
        lines.append(line)
    (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return folder.parent


def test_m3cot_task_runs_and_equals_ivtlrs_own_generation(qwen_checkpoint, synth_dir, tmp_path):
    include = local_task(tmp_path / "tasks" / "m3cot_local", TASKS_DIR / "m3cot_ivtlr", "m3cot_ivtlr_local",
                         synth_dir)
    samples, metrics = lmms_run(tmp_path, qwen_checkpoint, "m3cot_ivtlr_local", include, "latents=2")
    test = list(get_task("synth").load(str(synth_dir), "test"))
    assert [s["doc_id"] for s in samples] == list(range(len(test)))
    inf = load_inference(qwen_checkpoint)
    m3cot = get_task("m3cot")
    official = []
    for s, ex in zip(samples, test):  # one question at a time through ivtlr's own path
        alone = generate_prompts(inf, [(ex.id, inf.task.prompt(ex, "infer"), ex.image)], 2, 32)[0].text
        assert response(s) == alone.strip(), (s, alone)  # lmms-eval strips the text before scoring
        official.append(m3cot.judge(m3cot.to_record(ex, alone.strip()), "official")[1])
    assert metrics["official,none"] == pytest.approx(100 * sum(official) / len(official))


def test_scienceqa_img_functions_on_a_local_copy(qwen_checkpoint, synth_dir, tmp_path):
    sqa_tasks = Path(importlib.util.find_spec("lmms_eval").submodule_search_locations[0]) / "tasks" / "scienceqa"
    dd = load_from_disk(str(synth_dir))
    letters = "ABCDEFGHIJ"
    sqa = dd["test"].map(lambda r: {"answer": letters.index(r["answer"]), "hint": "", "subject": "natural science",
                                    "grade": "grade3"}, remove_columns=["answer"])
    data = tmp_path / "sqa"
    type(dd)({"test": sqa}).save_to_disk(str(data))
    include = local_task(tmp_path / "tasks" / "sqa_local", sqa_tasks, "scienceqa_img_local",
                         data, "scienceqa_img.yaml")  # lmms-eval's own prompt and exact-match scoring
    samples, metrics = lmms_run(tmp_path, qwen_checkpoint, "scienceqa_img_local", include, "latents=2",
                                "output=letter")
    assert len(samples) == len(sqa)
    inf = load_inference(qwen_checkpoint)
    test = list(get_task("synth").load(str(synth_dir), "test"))
    for s, ex in zip(samples, test):
        text = generate_prompts(inf, [(ex.id, inf.task.prompt(ex, "infer"), ex.image)], 2, 16)[0].text
        letter = response(s)
        assert letter in ("",) + tuple(letters[:len(ex.choices)])
        index = sqa_prediction(text)
        assert letter == (letters[index] if 0 <= index < len(ex.choices) else "")
    assert 0 <= metrics["exact_match,none"] <= 1


def test_unknown_model_args_are_refused(qwen_checkpoint, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", ImageFile.LOAD_TRUNCATED_IMAGES)  # restored after
    from ivtlr.lmms.model import IVTLR

    with pytest.raises(ValueError, match="unknown model_args"):
        IVTLR(checkpoint=str(qwen_checkpoint), latent=2)
    with pytest.raises(ValueError, match="output=letter needs prompt=task"):
        IVTLR(checkpoint=str(qwen_checkpoint), prompt="context", output="letter")
