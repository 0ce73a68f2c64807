"""The synthetic benchmark (dots family, the default, and arrows family): schema, determinism, balance, rationale
shape, and answers read back from the rendered pixels. Small n everywhere: the whole file runs in a few seconds."""

import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from datasets import Features, Image as ImageFeature, Sequence, Value, load_from_disk
from PIL import Image

from ivtlr.data import synth
from ivtlr.data.synth import DOT_PALETTE, LETTERS, PALETTE, SynthConfig, generate, make_example, synth_main

ARROWS = {"family": "arrows"}
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


def read_board(img: Image.Image, grid: int, family: str = "dots") -> synth.Scene:
    """Recover the scene from pixels alone. Dots: a cell's fill from a pixel next to its border, its dot's colour
    from its centre pixel. Arrows: a cell's colour from a corner pixel, its arrow from the ink balance (the head
    half of an arrow holds about twice the black pixels of the tail half)."""
    cell = img.width // grid
    if family == "dots":
        names = {rgb: name for name, rgb in DOT_PALETTE.items()} | {synth.START_RGB: synth.START_COLOUR}
        px = img.convert("RGB").load()
        fills, dots = [], []
        for i in range(grid * grid):
            r, c = divmod(i, grid)
            x0, y0 = c * cell, r * cell
            assert px[x0, y0] == synth.DOT_BORDER_RGB
            fills.append(names[px[x0 + 1, y0 + 1]])
            dots.append(names[px[x0 + cell // 2, y0 + cell // 2]])
        return synth.Scene(grid, tuple(fills), (None,) * grid * grid, tuple(dots))
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
    assert cfg["seed"] == 0 and cfg["grid"] == 3 and cfg["image_size"] == 84 and cfg["family"] == "dots"
    assert cfg["kinds"] == list(synth.DOT_KINDS) and cfg["n_colors"] == 9
    assert back["train"][0]["category"] == "dots-grid3-hops2"


def test_default_is_dots_and_arrows_stay_available():
    assert SynthConfig().family == "dots" and SynthConfig().kinds == synth.DOT_KINDS
    arrows = SynthConfig(**ARROWS)
    assert arrows.kinds == synth.ARROW_KINDS and arrows.n_colors == 6
    e = make_example(arrows, 0, "train", 0)
    assert e.kind in synth.ARROW_KINDS and not e.scene.dots and all(e.scene.arrows)
    with pytest.raises(ValueError, match="not of the dots family"):
        make_example(SynthConfig(), 0, "train", 0, kind="arrow-colour")


@pytest.mark.parametrize("knobs,size", [({}, 84), ({"image_size": 168}, 168), ({"grid": 4, **ARROWS}, 112),
                                        ({"grid": 4, "image_size": 224, **ARROWS}, 224)])
def test_image_is_grid_times_cell(knobs, size):
    ds = generate(None, 3, 1, seed=0, **knobs)["train"]
    assert all(img.size == (size, size) for img in ds["image"])


@pytest.mark.parametrize("family", ["dots", "arrows"])
def test_letters_and_kinds_balanced(family):
    cfg = SynthConfig(family=family)
    examples = [make_example(cfg, 0, "train", i) for i in range(120)]
    assert Counter(e.answer for e in examples) == {letter: 30 for letter in "ABCD"}
    assert Counter(e.kind for e in examples) == {k: 40 for k in synth.FAMILIES[family]}
    three = [make_example(SynthConfig(family=family, n_choices=3), 0, "test", i) for i in range(30)]
    assert Counter(e.answer for e in three) == {letter: 10 for letter in "ABC"}


@pytest.mark.parametrize("family", ["dots", "arrows"])
def test_text_alone_does_not_give_the_answer(family):
    # Same question text for every example of a kind; options distinct, from one vocabulary; answer content spread.
    cfg = SynthConfig(family=family)
    examples = [make_example(cfg, 5, "train", i) for i in range(300)]
    for kind in cfg.kinds:
        group = [e for e in examples if e.kind == kind]
        assert len({e.question for e in group}) == 1
        assert all(len(set(e.choices)) == 4 for e in group)
        answers = Counter(e.choices[LETTERS.index(e.answer)] for e in group)
        assert len(answers) >= 4 and max(answers.values()) < 0.45 * len(group)


def test_dot_count_answers_uniform():
    group = [make_example(SynthConfig(kinds=("dot-count",)), 2, "train", i) for i in range(800)]
    counts = Counter(e.choices[LETTERS.index(e.answer)] for e in group)
    assert set(counts) == {"1", "2", "3", "4"} and all(150 <= v <= 250 for v in counts.values()), counts
    assert all(sorted(e.choices) == ["1", "2", "3", "4"] for e in group)


@pytest.mark.parametrize("hops", [2, 3, 4])
def test_dot_chain_is_well_defined(hops):
    # Distinct fills (one white); every dot is another cell's non-white fill; the chain visits distinct cells.
    for kind in synth.DOT_KINDS:
        for i in range(40):
            e = make_example(SynthConfig(hops=hops), 4, "train", i, kind=kind)
            s = e.scene
            assert len(set(s.colours)) == 9 and s.colours.count("white") == 1
            assert all(d != "white" and d != f and d in s.colours for f, d in zip(s.colours, s.dots))
            assert list(e.path) == s.follow(hops) and len(set(e.path)) == hops + 1
            if kind != "dot-colour":  # the asked colour is never one seen on the way
                assert s.dots[e.path[-1]] not in {s.colours[c] for c in e.path}


def test_board_statistics_do_not_give_the_answer():
    # A sighted model that skips the arrows: "the option most common on the board" stays near chance (25%).
    cfg = SynthConfig(kinds=("arrow-colour", "arrow-direction"), **ARROWS)
    hits = Counter()
    for i in range(400):
        e = make_example(cfg, 7, "train", i)
        on_board = Counter(e.scene.colours if e.kind == "arrow-colour" else e.scene.arrows)
        guess = max(e.choices, key=lambda c: on_board[c])
        hits[e.kind] += guess == e.choices[LETTERS.index(e.answer)]
    assert hits["arrow-colour"] / 200 < 0.36 and hits["arrow-direction"] / 200 < 0.36


def test_dot_board_statistics_do_not_give_the_answer():
    # A sighted model that skips the chain: board-only guesses stay near chance (25%).
    hits, n = Counter(), Counter()
    for i in range(900):
        e = make_example(SynthConfig(), 7, "train", i)
        s, answer = e.scene, e.choices[LETTERS.index(e.answer)]
        on_board = Counter(s.dots)
        n[e.kind] += 1
        if e.kind == "dot-colour":  # the option seen most often as a dot
            guess = max(e.choices, key=lambda c: on_board[c])
        elif e.kind == "dot-count":  # the largest option count that some dot colour has
            guess = max((c for c in e.choices if int(c) in on_board.values()), key=int)
        else:  # an option whose cell's dot has exactly one twin (the first)
            guess = next((c for c in e.choices if on_board[s.dots[s.colours.index(c)]] == 2), e.choices[0])
        hits[e.kind] += guess == answer
    assert hits["dot-colour"] / n["dot-colour"] < 0.36
    assert hits["dot-count"] / n["dot-count"] < 0.45  # about 37%: a 4-dot colour leaves 5 dots for decoys
    assert hits["dot-match"] / n["dot-match"] < 0.36


DOT_TEXT = re.compile(r"[Tt]he (\w+) cell has an? (\w+) dot")


@pytest.mark.parametrize("knobs", [{}, {"hops": 3}, {"hops": 4}, {"n_choices": 3}, {"image_size": 168},
                                   {"kinds": ("dot-match",), "n_choices": 2}])
def test_dots_three_steps_and_answer_read_back_from_pixels(knobs):
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
        # Step 1 reads the white cell, step 2 the cells on the way, step 3 the reached cell: each names it and
        # the dot it holds, as the pixels show.
        path = scene.follow(cfg.hops)
        read = [[(scene.colours[c], scene.dots[c]) for c in part] for part in ([path[0]], path[1:-1], [path[-1]])]
        assert [DOT_TEXT.findall(step)[: len(part)] for step, part in zip(steps, read)] == read


@pytest.mark.parametrize("knobs", [{}, {"grid": 4, "hops": 3, "n_colors": 8}, {"distractors": 0, "n_choices": 3}])
def test_three_steps_and_answer_read_back_from_pixels(knobs):
    knobs = {**ARROWS, **knobs}
    cfg = SynthConfig(**knobs)
    ds = generate(None, 24, 1, seed=11, **knobs)["train"]
    for row in ds:
        steps = split_steps(row["rationale"])
        assert len(steps) == 3 and all(steps), row["rationale"]
        assert "\n" not in row["rationale"]
        scene = read_board(row["image"], cfg.grid, "arrows")
        content = synth.solve(scene, row["topic"], cfg.hops)  # answer from the pixels, not from the generator
        assert row["choices"][LETTERS.index(row["answer"])] == content
        assert steps[2].endswith(f"{content} is option ({row['answer']}).")
        # Step 1 reads the white cell's arrow, step 2 names the first cell reached.
        path = scene.follow(cfg.hops)
        assert steps[0] == f"The white cell has an arrow pointing {scene.arrows[path[0]]}"
        assert steps[1].startswith(f"It leads to {synth._article(scene.colours[path[1]])} {scene.colours[path[1]]}")


@pytest.mark.parametrize("family", ["dots", "arrows"])
def test_png_round_trip_is_lossless(family):
    e = make_example(SynthConfig(family=family), 0, "train", 0)
    img = synth.render(e.scene)
    assert Image.open(io.BytesIO(synth._png_bytes(img))).tobytes() == img.tobytes()


def test_dot_is_a_centred_12px_square_in_a_28px_cell():
    e = make_example(SynthConfig(), 0, "train", 0)
    px = synth.render(e.scene).load()
    dot, fill = DOT_PALETTE[e.scene.dots[0]], (DOT_PALETTE | {"white": synth.START_RGB})[e.scene.colours[0]]
    assert synth.dot_box(28) == (8, 19)
    assert all(px[x, y] == dot for x in range(8, 20) for y in range(8, 20))
    assert px[7, 13] == px[20, 13] == px[13, 7] == px[13, 20] == fill and px[0, 0] == synth.DOT_BORDER_RGB


@pytest.mark.parametrize("kwargs,message", [
    ({"n_train": 0}, "n_train"),
    ({"n_test": -1}, "n_test"),
    ({"grid": 1}, "grid"),
    ({"hops": 1}, "hops"),
    ({"n_choices": 5}, "n_choices"),
    ({"grid": 3, "image_size": 85}, "multiple of grid"),
    ({"kinds": ("arrow-colour", "spiral")}, "kinds"),
    ({"kinds": ("arrow-colour",)}, "kinds"),  # an arrow kind in the (default) dots family
    ({"grid": 2, **ARROWS}, r"grid\*grid-1 >= n_choices"),
    ({"grid": 2}, r"grid\*grid-1 >= n_choices"),
    ({"grid": 4}, "distinct fill per cell"),
    ({"n_colors": 3, **ARROWS}, "n_colors"),
    ({"n_colors": 7}, "n_colors"),
    ({"distractors": 2}, "arrows family only"),
    ({"hops": 5}, "too many"),
    ({"family": "spots"}, "family"),
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
    rc = synth_main(["--out", str(out), "--n-train", "8", "--n-test", "4", "--seed", "2", "--family", "arrows",
                     "--grid", "4", "--hops", "3", "--distractors", "none", "--kinds", "arrow-colour,colour-count"])
    assert rc == 0 and "train 8, test 4" in capsys.readouterr().out
    dd = load_from_disk(str(out))
    assert dd["train"][0]["image"].size == (112, 112)
    assert set(dd["train"]["topic"]) == {"arrow-colour", "colour-count"}
    assert dd["train"].to_dict() == generate(None, 8, 4, seed=2, family="arrows", grid=4, hops=3,
                                             kinds=("arrow-colour", "colour-count"))["train"].to_dict()
    dots = tmp_path / "dots"
    assert synth_main(["--out", str(dots), "--n-train", "6", "--n-test", "3", "--seed", "2", "--hops", "3"]) == 0
    assert "dots, 3x3 grid" in capsys.readouterr().out
    assert load_from_disk(str(dots))["train"].to_dict() == generate(None, 6, 3, seed=2, hops=3)["train"].to_dict()
    assert set(load_from_disk(str(dots))["train"]["topic"]) == set(synth.DOT_KINDS)
    with pytest.raises(SystemExit) as e:
        synth_main(["--out", str(out), "--n-train", "0"])
    assert e.value.code == 2 and "n_train must be" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        synth_main(["--out", str(out), "--family", "spots"])
    assert e.value.code == 2 and "--family" in capsys.readouterr().err


def test_docs_examples_are_up_to_date(tmp_path):
    block = synth.render_examples(tmp_path)
    assert block == synth.doc_block(DOC), "run: python -m ivtlr.data.synth update-docs docs/synthetic-task.md"
    for png in sorted(tmp_path.glob("synth-*.png")):
        assert png.read_bytes() == (DOC.parent / "img" / png.name).read_bytes(), png.name
