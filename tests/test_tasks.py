"""Benchmark tasks: rationale to steps, prompts (byte-exact), loading in every format, bad-record policy,
ScienceQA categories, the synthetic task and the registry. CPU, no network, seconds."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from fixtures_data import (
    FORMATS,
    m3cot_features,
    m3cot_row,
    m3cot_rows,
    scienceqa_features,
    scienceqa_row,
    scienceqa_rows,
    write_dataset,
)

from ivtlr.tasks import TASKS, DataError, Example, get_task, rationale_to_steps, sqa_categories, step_target

# ----------------------------------------------------------------------------------------------------------
# Rationale to steps


@pytest.mark.parametrize(
    "rationale, steps",
    [
        ("", []),
        ("  \n ", []),
        ("One.", ["One."]),
        ("One. Two.", ["One", "Two."]),
        ("One. Two. Three.", ["One", "Two", "Three."]),
        ("1. 2. 3. 4.", ["1. 2", "3", "4."]),  # 4 pieces: (q, r) = (1, 1) -> sizes 2, 1, 1
        ("1. 2. 3. 4. 5.", ["1. 2", "3. 4", "5."]),  # (1, 2) -> 2, 2, 1
        ("1. 2. 3. 4. 5. 6. 7.", ["1. 2. 3", "4. 5", "6. 7."]),  # (2, 1) -> 3, 2, 2
        ("1. 2. 3. 4. 5. 6.", ["1. 2", "3. 4", "5. 6."]),  # (2, 0) -> 2, 2, 2
        # Trailing ". ": the reference strips before splitting, so the last piece keeps its period.
        ("One. Two. ", ["One", "Two."]),
        ("One.\nTwo.\nThree. Four", ["One. Two", "Three", "Four"]),  # newlines become spaces
        ("Line one\nline two. End", ["Line one line two", "End"]),
        ("No period at all", ["No period at all"]),
    ],
)
def test_rationale_to_steps(rationale: str, steps: list[str]) -> None:
    assert rationale_to_steps(rationale) == steps


def test_rationale_to_steps_without_the_merge() -> None:
    """max_steps=None keeps every sentence (a benchmark whose sentences are its steps); another limit merges as 3."""
    assert rationale_to_steps("A. B. C. D. E.", None) == ["A", "B", "C", "D", "E."]
    assert rationale_to_steps("A. B. C. D. E.", 4) == ["A. B", "C", "D", "E."]
    assert rationale_to_steps("A. B. C. D. E.") == ["A. B", "C. D", "E."]


def test_step_targets_end_with_newline() -> None:
    example = Example("x", "q", ["a"], 0, rationale="A. B. C. D.")
    assert step_target("A") == "A\n"
    assert get_task("m3cot").step_targets(example) == ["A. B\n", "C\n", "D.\n"]


# ----------------------------------------------------------------------------------------------------------
# Prompts and answer targets (expected strings written out literally)

TWO = Example("q2", " What is shown? ", [" cat", "dog "], 1, context="A photo.")
FIVE = Example("q5", "Pick one.", ["v", "w", "x", "y", "z"], 4)


def test_m3cot_reference_prompts_differ_between_train_and_infer() -> None:
    task = get_task("m3cot", prompt_style="reference")
    assert task.prompt(TWO, "train") == "[Question]:{What is shown?}\n[Options]:\n(A).{cat}\n(B).{dog}\nAnswer:\n"
    assert task.prompt(TWO, "infer") == "[Question]:{What is shown?}\n[Options]:\nA.{cat}\nB.{dog}\nAnswer:"
    assert task.prompt(FIVE, "infer") == (
        "[Question]:{Pick one.}\n[Options]:\nA.{v}\nB.{w}\nC.{x}\nD.{y}\nE.{z}\nAnswer:"
    )
    assert task.prompt(FIVE, "train") == (
        "[Question]:{Pick one.}\n[Options]:\n(A).{v}\n(B).{w}\n(C).{x}\n(D).{y}\n(E).{z}\nAnswer:\n"
    )


def test_m3cot_aligned_prompt_is_the_same_in_both_modes_with_context() -> None:
    task = get_task("m3cot")
    expected = "[Context]:{A photo.}\n[Question]:{What is shown?}\n[Options]:\n(A).{cat}\n(B).{dog}\nAnswer:\n"
    assert task.prompt(TWO, "train") == expected
    assert task.prompt(TWO, "infer") == expected
    blank = Example("b", "Q?", ["a", "b"], 0, context="  ")
    assert task.prompt(blank, "infer") == "[Question]:{Q?}\n[Options]:\n(A).{a}\n(B).{b}\nAnswer:\n"
    with pytest.raises(ValueError, match="mode"):
        task.prompt(TWO, "eval")


def test_answer_targets() -> None:
    assert get_task("m3cot").answer_text(TWO) == "Therefore, the answer is B"
    assert get_task("scienceqa").answer_text(TWO) == "Therefore, the answer is 1"
    assert get_task("scienceqa", answer_format="letter").answer_text(FIVE) == "Therefore, the answer is E"


def test_scienceqa_prompts_use_the_hint_as_context() -> None:
    reference = get_task("scienceqa", prompt_style="reference")
    assert reference.prompt(TWO, "train") == "[Question]:{What is shown?}\n[Options]:\n(A).{cat}\n(B).{dog}\nAnswer:\n"
    assert reference.prompt(TWO, "infer") == "[Question]:{What is shown?}\n[Options]:\n(A).{cat}\n(B).{dog}\nAnswer:"
    aligned = get_task("scienceqa")
    assert aligned.prompt(TWO, "infer") == (
        "[Context]:{A photo.}\n[Question]:{What is shown?}\n[Options]:\n(A).{cat}\n(B).{dog}\nAnswer:\n"
    )


# ----------------------------------------------------------------------------------------------------------
# Loading, every supported format


@pytest.mark.parametrize("fmt", FORMATS)
def test_m3cot_loads_every_format(tmp_path, fmt: str) -> None:
    source = write_dataset(tmp_path, m3cot_features(), {"test": m3cot_rows(), "train": m3cot_rows()[:1]}, fmt)
    examples = get_task("m3cot").load(source, "test")
    assert [e.id for e in examples] == ["m1", "m2", "m4"]  # m3 has no image: the image subset drops it
    assert examples.filtered == 1 and not examples.skipped
    m1, m2, m4 = examples
    assert (m1.choices, m1.answer_index, m1.context) == (["yes", "no"], 0, "")
    assert (m1.domain, m1.topic) == ("science", "physics")
    assert (len(m2.choices), m2.answer_index, m2.answer_letter, m2.context) == (5, 4, "E", "A lab.")
    assert m2.rationale == "One.\nTwo. Three. Four. Five. Six. Seven."
    assert m2.image.convert("RGB").getpixel((0, 0)) == (0, 0, 255)
    assert m4.image.size == (8, 8) and m4.extra["category"] == "cat" and m4.extra["image_id"] == "img-m4"
    if fmt in ("disk", "parquet_dir"):
        assert [e.id for e in get_task("m3cot").load(source, "train")] == ["m1"]


def test_m3cot_keeps_text_only_records_when_asked(tmp_path) -> None:
    source = write_dataset(tmp_path, m3cot_features(), {"test": m3cot_rows()}, "disk")
    examples = get_task("m3cot", images="any").load(source, "test")
    assert [e.id for e in examples] == ["m1", "m2", "m3", "m4"] and examples[2].image is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_scienceqa_loads_every_format(tmp_path, fmt: str) -> None:
    source = write_dataset(tmp_path, scienceqa_features(), {"test": scienceqa_rows()}, fmt)
    examples = get_task("scienceqa").load(source, "test")
    assert [e.id for e in examples] == ["test-0", "test-2", "test-3"]  # ids count rows before the image filter
    assert examples.filtered == 2
    first, map_row, empty = examples
    assert first.rationale == "Mammals have hair. A whale is a mammal." and first.answer_index == 1
    assert map_row.rationale == "West is left." and map_row.context == "Look at the map."
    assert (map_row.domain, map_row.topic, map_row.extra["grade"]) == ("social science", "geography", "grade10")
    assert empty.rationale == "" and get_task("scienceqa").steps(empty) == []
    assert empty.answer_index == 4 and len(empty.choices) == 5


def test_scienceqa_rationale_falls_back_to_the_lecture(tmp_path) -> None:
    source = write_dataset(tmp_path, scienceqa_features(), {"test": scienceqa_rows()}, "disk")
    examples = get_task("scienceqa", images="any").load(source, "test")
    assert [e.rationale for e in examples] == [
        "Mammals have hair. A whale is a mammal.", "Only a solution.", "West is left.", "", "Only a lecture.",
    ]


def test_scienceqa_categories(tmp_path) -> None:
    source = write_dataset(tmp_path, scienceqa_features(), {"test": scienceqa_rows()}, "disk")
    examples = get_task("scienceqa", images="any").load(source, "test")
    assert [sqa_categories(e) for e in examples] == [
        ["NAT", "IMG", "G1-6"],
        ["LAN", "TXT", "G7-12"],
        ["SOC", "TXT", "IMG", "G7-12"],  # hint and image: counted under both
        ["NAT", "IMG", "G1-6"],
        ["NAT", "NO", "G7-12"],
    ]


def test_source_errors(tmp_path) -> None:
    task = get_task("m3cot")
    source = write_dataset(tmp_path, m3cot_features(), {"test": m3cot_rows()}, "disk")
    with pytest.raises(ValueError, match="no split 'validation'"):
        task.load(source, "validation")
    parquet = write_dataset(tmp_path, m3cot_features(), {"test": m3cot_rows()}, "parquet_dir")
    with pytest.raises(FileNotFoundError, match="no parquet files for split 'train'"):
        task.load(parquet, "train")
    with pytest.raises(FileNotFoundError):
        task.load(tmp_path / "nothing-here", "test")
    (tmp_path / "data.csv").write_text("id\n1\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        task.load(tmp_path / "data.csv", "test")


# ----------------------------------------------------------------------------------------------------------
# Bad records

BAD_M3COT = [
    (m3cot_row("b-empty", choices=[]), "empty_choices"),
    (m3cot_row("b-answer", answer="D"), "answer_out_of_range"),  # 2 choices, answer D
    (m3cot_row("b-bytes", image={"bytes": b"not an image", "path": None}), "unreadable_image"),
    (m3cot_row("b-missing", question=None), "missing_field"),
    (m3cot_row("b-noimg", image=None), "missing_image"),  # the synthetic task requires an image
]


@pytest.mark.parametrize("row, reason", BAD_M3COT, ids=[r for _, r in BAD_M3COT])
def test_bad_record_raises_naming_id_source_and_reason(tmp_path, row, reason: str) -> None:
    source = write_dataset(tmp_path, m3cot_features(), {"test": [m3cot_row("ok"), row]}, "disk")
    with pytest.raises(DataError, match=reason) as info:
        get_task("synth").load(source, "test")
    assert info.value.record_id == row["id"] and info.value.reason == reason
    assert str(source) in str(info.value) and repr(row["id"]) in str(info.value)


def test_bad_records_skipped_and_counted(tmp_path, caplog) -> None:
    rows = [m3cot_row("ok")] + [row for row, _ in BAD_M3COT]
    source = write_dataset(tmp_path, m3cot_features(), {"test": rows}, "disk")
    with caplog.at_level(logging.WARNING, logger="ivtlr.tasks.base"):
        examples = get_task("synth").load(source, "test", on_error="skip")
    assert [e.id for e in examples] == ["ok"]
    assert examples.skipped == {reason: 1 for _, reason in BAD_M3COT}
    assert [problem[:2] for problem in examples.problems] == [(row["id"], why) for row, why in BAD_M3COT]
    [record] = caplog.records
    assert "skipped 5 bad records" in record.getMessage() and "b-empty" in record.getMessage()


def test_m3cot_image_subset_filters_rather_than_fails(tmp_path) -> None:
    source = write_dataset(tmp_path, m3cot_features(), {"test": [m3cot_row("ok"), m3cot_row("t", image=None)]}, "disk")
    examples = get_task("m3cot").load(source, "test")
    assert [e.id for e in examples] == ["ok"] and examples.filtered == 1 and not examples.skipped


def test_scienceqa_answer_out_of_range_and_missing_field_in_jsonl(tmp_path) -> None:
    rows = [scienceqa_row(), scienceqa_row(answer=5), scienceqa_row(choices=[])]
    source = write_dataset(tmp_path, scienceqa_features(), {"test": rows}, "jsonl")
    with pytest.raises(DataError, match=r"record 'test-1': answer_out_of_range"):
        get_task("scienceqa").load(source, "test")
    examples = get_task("scienceqa").load(source, "test", on_error="skip")
    assert examples.skipped == {"answer_out_of_range": 1, "empty_choices": 1}
    # A JSON line without an "id" key (others have one): the record is named by its row index.
    (tmp_path / "m.jsonl").write_text('{"id": "a", "question": "q", "choices": ["x"], "answer": "A"}\n'
                                      '{"question": "q", "choices": ["x"], "answer": "A"}\n')
    with pytest.raises(DataError, match=r"record '#1': missing_field: field 'id'"):
        get_task("m3cot", images="any").load(tmp_path / "m.jsonl", "test")


def test_on_error_must_be_known(tmp_path) -> None:
    with pytest.raises(ValueError, match="on_error"):
        get_task("m3cot").load(tmp_path, "test", on_error="ignore")


# ----------------------------------------------------------------------------------------------------------
# The synthetic task and the registry


def test_synth_is_m3cot_from_a_local_directory(tmp_path) -> None:
    rows = [m3cot_row("s1", answer="B"), m3cot_row("s2", context="Grid 3x3.")]
    source = write_dataset(tmp_path, m3cot_features(), {"train": rows, "test": rows[:1]}, "disk")
    task = get_task("synth")
    assert task.name == "synth" and task.prompt_style == "aligned" and task.judge_names == ("official_az", "official", "reference")
    train = task.load(source, "train")
    assert [e.id for e in train] == ["s1", "s2"] and len(task.load(source, "test")) == 1
    assert task.prompt(train[1], "train") == task.prompt(train[1], "infer") == (
        "[Context]:{Grid 3x3.}\n[Question]:{Question s2?}\n[Options]:\n(A).{yes}\n(B).{no}\nAnswer:\n"
    )
    assert task.answer_text(train[0]) == "Therefore, the answer is B"
    for bad in (None, "someone/synth", tmp_path / "missing"):
        with pytest.raises(ValueError, match="directory"):
            task.load(bad, "train")


def test_registry_and_options() -> None:
    assert sorted(TASKS) == ["m3cot", "scienceqa", "synth"]
    assert get_task("m3cot", prompt_style="reference").prompt_style == "reference"
    with pytest.raises(KeyError, match="unknown task"):
        get_task("gsm8k")
    with pytest.raises(ValueError, match="prompt_style"):
        get_task("m3cot", prompt_style="chat")
    with pytest.raises(ValueError, match="answer_format"):
        get_task("scienceqa", answer_format="word")
    with pytest.raises(TypeError):
        get_task("m3cot", answer_format="index")


def test_import_has_no_side_effects() -> None:
    code = "import sys, ivtlr.tasks; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False" and out.stderr == ""
