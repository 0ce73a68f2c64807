"""The synthetic arrow-grid benchmark: schema, determinism, balance, rationale shape, and answers read back from
the rendered pixels. Small n everywhere: the whole file runs in a few seconds."""

import io
import json
from collections import Counter
from pathlib import Path

import pytest
from datasets import Features, Image as ImageFeature, Sequence, Value, load_from_disk
from PIL import Image

from ivtlr.data import synth
from ivtlr.data.synth import LETTERS, PALETTE, SynthConfig, generate, make_example, synth_main

DOC = Path(__file__).resolve().parents[1] / "docs" / "synthetic-task.md"

# M3CoT (LightChen2333/M3CoT), column for column.
M3COT_FEATURES = Features({
    "id": Value("string"), "category": Value("string"), "image_id": Value("string"), "question": Value("string"),
    "choices": Sequence(Value("string")), "context": Value("string"), "answer": Value("string"),
    "rationale": Value("string"), "split": Value("string"), "image": ImageFeature(), "domain": Value("string"),
    "topic": Value("string"),
})


def split_steps(rationale: str) -> list[str]:
    """IVT-LR's splitter: newlines to spaces, split on ". ", drop a trailing empty piece (no merging here)."""
    pieces = rationale.replace("\n", " ").split(". ")
    return pieces[:-1] if pieces and pieces[-1] == "" else pieces


def read_board(img: Image.Image, grid: int) -> synth.Scene:
    """Recover the scene from pixels alone: a cell's colour from a corner pixel, its arrow from the ink balance
    (the head half of an arrow holds about twice the black pixels of the tail half)."""
    cell = img.width // grid
    names = {rgb: name for name, rgb in PALETTE.items()} | {synth.START_RGB: synth.START_COLOUR}
    px = img.convert("RGB").load()
    colours, arrows = [], []
    for i in range(grid * grid):
        r, c = divmod(i, grid)
        x0, y0 = c * cell, r * cell
        colours.append(names[px[x0 + 2, y0 + 2]])
        ink = [(x - x0 - cell / 2, y - y0 - cell / 2) for x in range(x0, x0 + cell) for y in range(y0, y0 + cell)
               if px[x, y] == (0, 0, 0)]
        if not ink:
            arrows.append(None)
            continue
        horiz = sum((dx > 0) - (dx < 0) for dx, _ in ink)
        vert = sum((dy > 0) - (dy < 0) for _, dy in ink)
        if abs(horiz) > abs(vert):
            arrows.append("right" if horiz > 0 else "left")
        else:
            arrows.append("down" if vert > 0 else "up")
    return synth.Scene(grid, tuple(colours), tuple(arrows))


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    generate(tmp_path / "a", 12, 6, seed=3)
    generate(tmp_path / "b", 12, 6, seed=3)
    generate(tmp_path / "c", 12, 6, seed=4)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert Path("train/data-00000-of-00001.arrow") in files
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    arrow = "train/data-00000-of-00001.arrow"
    assert (tmp_path / "a" / arrow).read_bytes() != (tmp_path / "c" / arrow).read_bytes()


def test_examples_do_not_depend_on_split_size():
    small, large = generate(None, 4, 1, seed=1), generate(None, 9, 1, seed=1)
    assert small["train"].to_dict() == large["train"].select(range(4)).to_dict()


def test_schema_is_m3cot_and_loads_back(tmp_path):
    dd = generate(tmp_path / "d", 6, 3, seed=0)
    back = load_from_disk(str(tmp_path / "d"))
    assert set(back) == {"train", "test"}
    for split, ds in back.items():
        assert ds.features == M3COT_FEATURES
        assert list(ds.features) == list(M3COT_FEATURES)
        assert ds.to_dict() == dd[split].to_dict()
        row = ds[0]
        assert row["split"] == split and row["id"] == row["image_id"] == f"synth-{split}-000000"
        assert row["context"] == "" and row["answer"] in LETTERS[:4]
        assert row["domain"] == synth.DOMAIN[row["topic"]]
    assert len(back["train"]) == 6 and len(back["test"]) == 3
    cfg = json.loads((tmp_path / "d" / "synth_config.json").read_text())
    assert cfg["seed"] == 0 and cfg["grid"] == 3 and cfg["image_size"] == 84


@pytest.mark.parametrize("knobs,size", [({}, 84), ({"grid": 4}, 112), ({"grid": 4, "image_size": 224}, 224)])
def test_image_is_grid_times_cell(knobs, size):
    ds = generate(None, 3, 1, seed=0, **knobs)["train"]
    assert all(img.size == (size, size) for img in ds["image"])


def test_letters_and_kinds_balanced():
    cfg = SynthConfig()
    examples = [make_example(cfg, 0, "train", i) for i in range(120)]
    assert Counter(e.answer for e in examples) == {letter: 30 for letter in "ABCD"}
    assert Counter(e.kind for e in examples) == {k: 40 for k in synth.KINDS}
    three = [make_example(SynthConfig(n_choices=3), 0, "test", i) for i in range(30)]
    assert Counter(e.answer for e in three) == {letter: 10 for letter in "ABC"}


def test_text_alone_does_not_give_the_answer():
    # Same question text for every example of a kind; options distinct, from one vocabulary; answer content spread.
    cfg = SynthConfig()
    examples = [make_example(cfg, 5, "train", i) for i in range(300)]
    for kind in synth.KINDS:
        group = [e for e in examples if e.kind == kind]
        assert len({e.question for e in group}) == 1
        assert all(len(set(e.choices)) == 4 for e in group)
        answers = Counter(e.choices[LETTERS.index(e.answer)] for e in group)
        assert len(answers) >= 4 and max(answers.values()) < 0.45 * len(group)


def test_board_statistics_do_not_give_the_answer():
    # A sighted model that skips the arrows: "the option most common on the board" stays near chance (25%).
    cfg = SynthConfig(kinds=("arrow-colour", "arrow-direction"))
    hits = Counter()
    for i in range(400):
        e = make_example(cfg, 7, "train", i)
        on_board = Counter(e.scene.colours if e.kind == "arrow-colour" else e.scene.arrows)
        guess = max(e.choices, key=lambda c: on_board[c])
        hits[e.kind] += guess == e.choices[LETTERS.index(e.answer)]
    assert hits["arrow-colour"] / 200 < 0.36 and hits["arrow-direction"] / 200 < 0.36


@pytest.mark.parametrize("knobs", [{}, {"grid": 4, "hops": 3, "n_colors": 8}, {"distractors": 0, "n_choices": 3}])
def test_three_steps_and_answer_read_back_from_pixels(knobs):
    cfg = SynthConfig(**knobs)
    ds = generate(None, 24, 1, seed=11, **knobs)["train"]
    for row in ds:
        steps = split_steps(row["rationale"])
        assert len(steps) == 3 and all(steps), row["rationale"]
        assert "\n" not in row["rationale"]
        scene = read_board(row["image"], cfg.grid)
        content = synth.solve(scene, row["topic"], cfg.hops)  # answer from the pixels, not from the generator
        assert row["choices"][LETTERS.index(row["answer"])] == content
        assert steps[2].endswith(f"{content} is option ({row['answer']}).")
        # Step 1 reads the white cell's arrow, step 2 names the first cell reached.
        path = scene.follow(cfg.hops)
        assert steps[0] == f"The white cell has an arrow pointing {scene.arrows[path[0]]}"
        assert steps[1].startswith(f"It leads to {synth._article(scene.colours[path[1]])} {scene.colours[path[1]]}")


def test_png_round_trip_is_lossless():
    e = make_example(SynthConfig(), 0, "train", 0)
    img = synth.render(e.scene)
    assert Image.open(io.BytesIO(synth._png_bytes(img))).tobytes() == img.tobytes()


@pytest.mark.parametrize("kwargs,message", [
    ({"n_train": 0}, "n_train"),
    ({"n_test": -1}, "n_test"),
    ({"grid": 1}, "grid"),
    ({"hops": 1}, "hops"),
    ({"n_choices": 5}, "n_choices"),
    ({"grid": 3, "image_size": 85}, "multiple of grid"),
    ({"kinds": ("arrow-colour", "spiral")}, "kinds"),
    ({"grid": 2}, r"grid\*grid-1 >= n_choices"),
    ({"n_colors": 3}, "n_colors"),
])
def test_bad_arguments_fail_clearly(kwargs, message):
    args = {"n_train": 2, "n_test": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(None, args.pop("n_train"), args.pop("n_test"), seed=0, **args)


def test_unknown_knob_is_a_type_error():
    with pytest.raises(TypeError, match="colours"):
        generate(None, 2, 2, seed=0, colours=5)


def test_cli_writes_a_loadable_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = synth_main(["--out", str(out), "--n-train", "8", "--n-test", "4", "--seed", "2", "--grid", "4",
                     "--hops", "3", "--distractors", "none", "--kinds", "arrow-colour,colour-count"])
    assert rc == 0 and "train 8, test 4" in capsys.readouterr().out
    dd = load_from_disk(str(out))
    assert dd["train"][0]["image"].size == (112, 112)
    assert set(dd["train"]["topic"]) == {"arrow-colour", "colour-count"}
    assert dd["train"].to_dict() == generate(None, 8, 4, seed=2, grid=4, hops=3,
                                             kinds=("arrow-colour", "colour-count"))["train"].to_dict()
    with pytest.raises(SystemExit) as e:
        synth_main(["--out", str(out), "--n-train", "0"])
    assert e.value.code == 2 and "n_train must be" in capsys.readouterr().err


def test_docs_examples_are_up_to_date(tmp_path):
    block = synth.render_examples(tmp_path)
    assert block == synth.doc_block(DOC), "run: python -m ivtlr.data.synth update-docs docs/synthetic-task.md"
    for png in sorted(tmp_path.glob("synth-*.png")):
        assert png.read_bytes() == (DOC.parent / "img" / png.name).read_bytes(), png.name
