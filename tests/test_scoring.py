"""Judges (M3CoT official, the authors' lenient rule, the authors' ScienceQA extraction), score reports, the
predictions JSONL round trip and `ivtlr score`. CPU, no network, milliseconds."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from ivtlr.commands.score import main as score_main
from ivtlr.tasks import DataError, Example, Prediction, get_task, score_file
from ivtlr.tasks.predictions import read_jsonl, write_jsonl
from ivtlr.tasks.scoring import (
    judge_answer,
    official_prediction,
    reference_candidates,
    reference_judge,
    sqa_prediction,
)

RGB = ["red", "green", "blue"]
GREEK = ["alpha", "beta", "gamma", "delta"]  # option texts that never occur in the outputs below

# ----------------------------------------------------------------------------------------------------------
# M3CoT's official judge


@pytest.mark.parametrize(
    "text, choices, prediction",
    [
        # (0) "[Answer]" sections: the text after the last one, cut at [Rationale] / [Context]
        ("[Answer] (A) [Rationale] so not (B)", RGB, "A"),
        ("(B) at first. [Answer] draft (A) [Answer] final (C)", RGB, "C"),
        ("[Answer] A [Context] (B)", GREEK, "A"),
        # (1) "(X)": the last match wins, uppercased, even beyond the choices
        ("(A) is wrong, (C) is right, so (B).", RGB, "B"),
        ("the answer is (c)", RGB, "C"),
        ("red (B)", RGB, "B"),  # parentheses beat the option text
        ("(Z)", RGB, "Z"),
        # (2) option text as a substring: the HIGHEST index, not the last occurrence
        ("Blue? No: it is red.", RGB, "C"),
        ("a category", ["cat", "category"], "B"),  # "cat" is inside "category": both match
        ("a cat", ["cat", "category"], "A"),
        # (3) bare uppercase letters as tokens: the highest one among A.. (number of choices)
        ("A or C", GREEK, "C"),
        ("I think B.", GREEK, "B"),  # "I" is not one of A-D; "." becomes a space
        ("E!", GREEK, "FAILED"),  # E is beyond the 4 choices, and "e" is not a token either
        ("A\tB", GREEK, "FAILED"),  # tabs do not split tokens
        # (4) lowercase letters: the article "a" counts
        ("it is a b", GREEK, "B"),
        ("i pick c, not a", GREEK, "C"),
        # (5)
        ("no idea", GREEK, "FAILED"),
        ("", GREEK, "FAILED"),
    ],
)
def test_official_prediction(text: str, choices: list[str], prediction: str) -> None:
    assert official_prediction(text, choices) == prediction


def test_official_judge_answer() -> None:
    assert judge_answer("(B)", RGB, "B") and judge_answer("(B)", RGB, 1)
    assert not judge_answer("(B)", RGB, "C") and not judge_answer("no idea", GREEK, "A")
    assert judge_answer("", ["", "x"], "A")  # an empty option text is a substring of anything (as in the original)


# ----------------------------------------------------------------------------------------------------------
# The authors' lenient rule and their ScienceQA extraction


def test_reference_candidates() -> None:
    assert reference_candidates("Therefore, the answer is B") == {"B"}
    assert reference_candidates("the answer is\n\n c") == {"C"}
    assert reference_candidates("Answer: C ... so the answer is B") == {"B", "C"}
    # The role word of the decoded chat template is deleted, else its "a" would be read as the answer.
    assert reference_candidates("...\nAnswer:\nassistant\nD is it") == {"D"}
    assert reference_candidates("ANSWER: assistant\n\ne") == {"E"}
    assert reference_candidates("nothing here") == set()


def test_reference_judge_reads_prompt_and_output_leniently() -> None:
    prompt = "[Question]:{Q?}\n[Options]:\n(A).{x}\n(B).{y}\nAnswer:\n"
    assert reference_candidates(prompt + "\n" + "B. because") == {"B"}
    assert reference_candidates(prompt + "\n" + "Therefore, the answer is B") == {"T", "B"}
    assert reference_judge("the answer is A, or the answer is B", " b ")
    # Matches do not overlap: the prompt's "Answer:" consumes the "T" of "The answer is C", so C is missed
    # (as in the reference, whose decoded text reads "Answer:\nThe answer is C" once "assistant" is deleted).
    assert reference_candidates(prompt + "\n" + "The answer is C") == {"T"}


@pytest.mark.parametrize(
    "text, index",
    [
        ("Therefore, the answer is 2", 2),
        ("the answer is: 1", 1),
        ("the answer is 1. Therefore, the answer is 3", 3),  # pattern order, not text order
        ("Therefore the answer is B", 1),
        ("so the answer is c", 2),
        ("the answer is 0 or the answer is A", 0),  # digits before letters
        ("no answer", -1),
    ],
)
def test_sqa_prediction(text: str, index: int) -> None:
    assert sqa_prediction(text) == index


# ----------------------------------------------------------------------------------------------------------
# Reports, the predictions JSONL, `ivtlr score`


def m3cot_predictions() -> list[Prediction]:
    e1 = Example("e1", "Which pet?", ["cat", "dog"], 0, domain="science", topic="physics")
    e2 = Example("e2", "Which colour?", RGB, 2, domain="commonsense", topic="social")
    e3 = Example("e3", "Which way?", ["up", "down"], 1, domain="science", topic="biology")
    return [
        Prediction(e1, "Therefore, the answer is A"),  # both judges: right
        Prediction(e2, "Therefore, the answer is C, no wait (B)"),  # official: B (last paren); lenient: C
        Prediction(e3, "I am not sure"),  # official: FAILED; lenient: only "I"
    ]


def test_m3cot_report_both_judges_side_by_side() -> None:
    report = get_task("m3cot").score(m3cot_predictions()).to_dict(verdicts=True)
    acc = lambda cell: (cell["correct"], cell["total"])  # noqa: E731
    assert report["judges"] == ["official", "reference"]
    assert {j: acc(c) for j, c in report["overall"].items()} == {"official": (1, 3), "reference": (2, 3)}
    domain, topic = report["groups"]["domain"], report["groups"]["topic"]
    assert {k: (acc(v["official"]), acc(v["reference"])) for k, v in domain.items()} == {
        "science": ((1, 2), (1, 2)), "commonsense": ((0, 1), (1, 1)),
    }
    assert {k: (acc(v["official"]), acc(v["reference"])) for k, v in topic.items()} == {
        "science/physics": ((1, 1), (1, 1)), "commonsense/social": ((0, 1), (1, 1)),
        "science/biology": ((0, 1), (0, 1)),
    }
    assert report["verdicts"][1] == {
        "id": "e2", "answer": "C",
        "official": {"prediction": "B", "correct": False},
        "reference": {"prediction": ["C", "T"], "correct": True},
    }
    assert report["verdicts"][2]["official"]["prediction"] == "FAILED"


def test_custom_jsonl_round_trip(tmp_path, capsys) -> None:
    task = get_task("m3cot")
    predictions = m3cot_predictions()
    records = task.records(predictions)
    assert set(records[0]) == {"id", "choices", "answer", "domain", "topic", "messages"}
    assert records[0]["messages"] == [task.prompt(predictions[0].example, "infer"), "Therefore, the answer is A"]
    path = task.write_predictions(tmp_path / "out" / "preds.jsonl", predictions)
    task.write_predictions(path, predictions)  # a rerun overwrites, it does not append
    assert read_jsonl(path, task.record_fields) == records

    both = score_file(path, judge="all", verdicts=True)
    assert both == {"file": str(path), **task.score(predictions).to_dict(verdicts=True)}
    printed = capsys.readouterr().out
    assert "33.33 (1/3)" in printed and "66.67 (2/3)" in printed
    assert "domain commonsense" in printed and "topic science/biology" in printed and "e2\tanswer=C" in printed

    official = score_file(path, quiet=True)  # default judge: official
    assert official["judges"] == ["official"] and official["overall"]["official"]["correct"] == 1
    assert "verdicts" not in official and capsys.readouterr().out == ""


def test_score_file_reads_another_models_file(tmp_path) -> None:
    lines = [
        {"id": "x1", "choices": RGB, "answer": "B", "domain": "d", "topic": "t", "messages": ["Q", "(B)"]},
        {"id": "x2", "choices": RGB, "answer": 0, "domain": "d", "topic": "t", "messages": ["Q", "the answer is A"]},
    ]
    path = write_jsonl(tmp_path / "other.jsonl", lines)
    result = score_file(path, judge="all", quiet=True)
    assert result["overall"]["official"]["correct"] == 2 and result["overall"]["reference"]["correct"] == 1


def test_bad_predictions_files(tmp_path) -> None:
    good = {"id": "x1", "choices": RGB, "answer": "B", "domain": "d", "topic": "t", "messages": ["Q", "(B)"]}
    fields = get_task("m3cot").record_fields
    twice = write_jsonl(tmp_path / "twice.jsonl", [good, good])
    with pytest.raises(DataError, match="twice.jsonl:2: record 'x1': duplicate_id"):
        read_jsonl(twice, fields)
    missing = write_jsonl(tmp_path / "missing.jsonl", [good, {**good, "id": "x2", "topic": None}])
    with pytest.raises(DataError, match="missing.jsonl:2: record 'x2': missing_field: field 'topic'"):
        read_jsonl(missing, fields)
    (tmp_path / "list.jsonl").write_text('["id", 1]\n')
    with pytest.raises(DataError, match="list.jsonl:1: record 'line 1': invalid_json"):
        read_jsonl(tmp_path / "list.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"id": 1}\n{oops\n')
    with pytest.raises(DataError, match="broken.jsonl:2: record 'line 2': invalid_json"):
        read_jsonl(tmp_path / "broken.jsonl")


def test_score_main(tmp_path, capsys) -> None:
    path = write_jsonl(tmp_path / "preds.jsonl", get_task("m3cot").records(m3cot_predictions()))
    assert score_main(["--task", "m3cot", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["judges"] == ["official"] and [v["id"] for v in result["verdicts"]] == ["e1", "e2", "e3"]

    assert score_main([str(path), "--judge", "reference"]) == 0
    assert "66.67 (2/3)" in capsys.readouterr().out

    from ivtlr.commands import main as ivtlr

    assert ivtlr(["score", str(tmp_path / "absent.jsonl")]) == 2
    assert "ivtlr score: error: No such file or directory" in capsys.readouterr().err
    assert ivtlr(["score", "--task", "scienceqa", "--judge", "official", str(path)]) == 2
    assert "has judges ['reference']" in capsys.readouterr().err


def test_scienceqa_report_per_category(tmp_path) -> None:
    task = get_task("scienceqa")
    def meta(subject: str, grade: str) -> dict[str, str]:
        return {"subject": f"{subject} science", "grade": grade}

    nat_img = Example("a", "Q", ["x", "y"], 1, image=Image.new("RGB", (2, 2)), extra=meta("natural", "grade2"))
    soc_txt = Example("b", "Q", ["x", "y", "z"], 2, context="hint", extra=meta("social", "grade9"))
    lan_no = Example("c", "Q", ["x", "y"], 0, extra=meta("language", "grade12"))
    predictions = [
        Prediction(nat_img, "Therefore, the answer is 1"),
        Prediction(soc_txt, "Therefore, the answer is B"),  # letter mapped to index 1: wrong
        Prediction(lan_no, "Therefore, the answer is 0"),
    ]
    report = task.score(predictions).to_dict(verdicts=True)
    assert report["judges"] == ["reference"] and report["overall"]["reference"]["correct"] == 2
    categories = report["groups"]["category"].items()
    by_category = {k: (v["reference"]["correct"], v["reference"]["total"]) for k, v in categories}
    assert by_category == {
        "NAT": (1, 1), "IMG": (1, 1), "G1-6": (1, 1), "SOC": (0, 1), "TXT": (0, 1), "G7-12": (1, 2),
        "LAN": (1, 1), "NO": (1, 1),
    }
    assert report["verdicts"][1]["reference"] == {"prediction": 1, "correct": False}

    path = write_jsonl(tmp_path / "sqa.jsonl", task.records(predictions))
    assert score_file(path, task="scienceqa", quiet=True) == {"file": str(path), **task.score(predictions).to_dict()}
