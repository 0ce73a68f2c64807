"""Property-based fuzzing of every input boundary: any input ends in a result or in the error the boundary
documents, never in another exception. Each property runs twice: ``test_any_*`` in the default run (40
examples), and ``test_long_*`` behind the ``slow`` marker (``python -m pytest -m slow tests/test_fuzz.py``,
2,000 examples)."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ivtlr import checkpoint as ckpt
from ivtlr.config import TrainConfig
from ivtlr.data.synth import SynthConfig, generate
from ivtlr.explain import Question, png_bytes
from ivtlr.serve import BadRequest, Limits, read_image
from ivtlr.tasks import DataError, get_task
from ivtlr.tasks.predictions import read_jsonl

FAST, LONG = 40, 2000
_long: dict[str, object] = {}


def fuzz(*strategies):
    """``@fuzz(*strategies)`` with the fast profile, plus a long twin ``test_long_<name>`` marked slow."""
    def deco(body):
        def twin(n):
            return settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck))(
                given(*strategies)(body))
        _long[body.__name__.replace("test_any_", "test_long_")] = pytest.mark.slow(twin(LONG))
        return twin(FAST)
    return deco

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.lists(st.integers(-3, 5), max_size=4))
KEYS = ["k", "lr", "batch_size", "task", "source", "max_latent_stage", "lora_r", "tiny_hidden", "dtype",
        "patch_order", "stage_mix_prob", "latent_grad", "no_cot", "out_dir", "keep_last", "learning_rate", "x"]
SECTIONS = list(TrainConfig.SECTIONS) + ["optimiser"]


@fuzz(st.dictionaries(st.sampled_from(SECTIONS), st.one_of(
    st.dictionaries(st.sampled_from(KEYS), scalars, max_size=4), scalars), max_size=4))
def test_any_config_is_a_config_or_a_named_error(data):
    try:
        cfg = TrainConfig.from_dict(data, source="fuzz.yaml")
    except ValueError as err:
        assert str(err).startswith("fuzz.yaml: "), err
        return
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # what loads round-trips


record_values = st.one_of(scalars, st.lists(st.one_of(st.text(max_size=6), st.integers()), max_size=3))


@fuzz(st.lists(st.one_of(
    st.fixed_dictionaries({}, optional={k: record_values for k in ("id", "choices", "answer", "domain", "topic",
                                                                   "messages", "categories")}),
    st.text(max_size=20)), max_size=4))
def test_any_predictions_file_is_scored_or_refused_by_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("p") / "p.jsonl"
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x.replace("\n", " ")) + "\n" for x in lines))
    for name in ("m3cot", "synth", "scienceqa"):
        task = get_task(name)
        try:
            task.score_records(read_jsonl(path, task.record_fields), "all")
        except DataError as err:
            assert str(path) in str(err)
        except ValueError as err:  # a record-level check of the judge (e.g. ScienceQA's answer index)
            assert "record" in str(err) or "option" in str(err), err


@fuzz(st.fixed_dictionaries({}, optional={
    "family": st.sampled_from(["dots", "arrows", "spots"]), "grid": st.integers(-1, 7), "hops": st.integers(-1, 6),
    "n_colors": st.one_of(st.none(), st.integers(-1, 12)), "n_choices": st.integers(-1, 12),
    "cell": st.integers(-1, 40), "image_size": st.one_of(st.none(), st.integers(-5, 200)),
    "distractors": st.one_of(st.none(), st.integers(-1, 9)), "kinds": st.lists(
        st.sampled_from(["dot-colour", "dot-count", "dot-match", "arrow-colour", "nope"]), max_size=2).map(tuple),
    "fixed_options": st.booleans(),
    "step_style": st.sampled_from(["template", "content_first", "pairs", "bogus"])}))
def test_any_synth_knobs_give_a_dataset_or_a_value_error(knobs):
    try:
        dd = generate(None, 3, 2, seed=1, **knobs)
    except ValueError:
        return
    task = get_task("synth")
    for row in dd["test"]:
        assert 0 <= ["ABCDEFGHIJKLMNOPQRSTUVWXYZ".index(row["answer"])] [0] < len(row["choices"])
    assert task is not None and SynthConfig(**knobs)


def _png(size=(20, 20)) -> bytes:
    return png_bytes(Image.new("RGB", size, "red"))


@fuzz(st.one_of(st.binary(max_size=3000), st.integers(0, 400).map(lambda n: _png()[:n]),
                 st.tuples(st.integers(1, 200), st.integers(1, 200)).map(_png)))
def test_any_upload_is_an_image_or_a_message(data):
    limits = Limits(max_upload_bytes=2500, max_pixels=150 * 150)
    try:
        image = read_image(data, limits)
    except BadRequest as err:
        assert str(err) and err.status in (400, 413)
        return
    assert image.mode == "RGB" and image.width * image.height <= limits.max_pixels


@fuzz(st.text(max_size=30), st.one_of(st.text(max_size=8), st.lists(st.one_of(st.text(max_size=5), st.integers()),
                                                                       max_size=30)))
def test_any_infer_question_is_valid_or_refused(text, choices):
    try:
        q = Question(Image.new("RGB", (8, 8)), text, choices)
    except ValueError as err:
        assert "question" in str(err)
        return
    assert 2 <= len(q.choices) <= 26 and q.question.strip()


@pytest.fixture(scope="module")
def pristine(qwen_checkpoint, tmp_path_factory):
    return qwen_checkpoint


@fuzz(st.sampled_from(["model/model.safetensors", "trainer_state.pt", "config.yaml", "meta.json",
                        "tokenizer/tokenizer.json"]), st.floats(0, 1), st.sampled_from(["flip", "truncate"]))
def test_any_damaged_checkpoint_is_refused_naming_the_file(pristine, tmp_path_factory, name, where, how):
    path = shutil.copytree(pristine, tmp_path_factory.mktemp("ck") / "ck")
    file = path / name
    data = bytearray(file.read_bytes())
    at = min(int(where * len(data)), len(data) - 1)
    if how == "flip":
        data[at] ^= 0x01
    else:
        data = data[:at]
    file.write_bytes(bytes(data))
    if name == "meta.json":  # read first (it says which kind of checkpoint this is): valid JSON may still load
        try:
            ckpt.read_meta(path)
        except ValueError as err:
            assert "meta.json" in str(err)
            return
    with pytest.raises(ckpt.CheckpointError, match=name.split("/")[-1]):
        ckpt.verify_checkpoint(path)


globals().update(_long)
