"""`ivtlr experiments`: every experiment's commands are valid `ivtlr` invocations, latent experiments start from a
stage-0 experiment, and the docs page renders from summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ivtlr.commands import experiments as ex


def test_every_experiment_has_a_known_base_and_valid_flags():
    import argparse

    from ivtlr.config import TrainConfig
    from ivtlr.cliargs import add_dataclass_flags

    parser = argparse.ArgumentParser()
    parser.add_argument("config", nargs="?")
    base = TrainConfig()
    for section in TrainConfig.SECTIONS:
        add_dataclass_flags(parser, type(getattr(base, section)), prefix=section)
    from ivtlr.commands.demo import build_parser as demo_parser

    for e in ex.EXPERIMENTS.values():
        cmds = ex.commands(e)
        if e.group == "demo":  # a whole demo: its flags are the demo's
            assert [c[1] for c in cmds] == ["demo"]
            demo_parser().parse_args(cmds[0][2:])
            continue
        if e.is_latent:
            base = ex.EXPERIMENTS[e.latent_from]
            assert base.group == ("demo" if e.group == "recipe" else "stage0")
        train = next(c for c in cmds if c[1] == "train")
        args = [a if not a.startswith("$(") else "x" for a in train[2:]]
        parser.parse_args(args)  # every override is a real flag with a valid value
        if e.group == "recipe":  # the base demo's own latent config, one thing changed
            assert train[2] == str(ex.ROOT / e.latent_from / "demo" / "ivtlr" / "config.yaml")
            named = {a.lstrip("-").removeprefix("no-") for a in train[3:] if a.startswith("--")}
            assert named == {*e.train, "run.out_dir"}
        if not e.is_latent:
            assert cmds[0][:3] == ["ivtlr", "data", "synth"]


def test_learnt_at_and_docs_render(tmp_path, monkeypatch):
    curve = [{"step": 100, "accuracy": 0.1, "step_match": [0.5, 0.0, 0.0]},
             {"step": 200, "accuracy": 0.5, "step_match": [0.95, 0.2, 0.1]},
             {"step": 300, "accuracy": 0.9, "step_match": [1.0, 0.92, 0.91]}]
    assert ex.learnt_at(curve) == [200, 300, 300]
    name = next(iter(ex.EXPERIMENTS))
    summary = {"name": name, "group": "stage0", "question": "q", "commands": ["ivtlr train x"], "steps": 300,
               "final_loss": 0.1, "curve": curve, "learnt_at": [200, 300, 300], "wall_seconds": 60,
               "cot": {"accuracy": 0.9, "judge": "official_az", "ar_steps": 40, "by_kind": {"dot-colour": 0.9}}}
    docs = tmp_path / "experiments"
    docs.mkdir()
    (docs / f"{name}.json").write_text(json.dumps(summary))
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- experiments:begin -->\nold\n<!-- experiments:end -->\noutro\n")
    monkeypatch.setattr(ex, "DOCS", docs)
    ex.write_docs(page)
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert f"| `{name}` | q | 200 | 300 | 300 | 90.0 |" in text and "ivtlr train x" in text


def test_unknown_experiment_is_refused(capsys):
    with pytest.raises(SystemExit):
        ex.main(["run", "no-such-experiment"])


def test_recipe_table_renders_any_number_of_stages():
    """A demo of 3 hops has four latent stages: the table lists them all, and the last stage's validations."""
    summary = {"name": "demo-hops3", "group": "demo", "question": "q", "commands": ["ivtlr demo --hops 3"],
               "steps": 2000, "wall_seconds": 60, "validation": [[157, 1, 1.0], [1900, 4, 0.42], [2000, 4, 1.0]],
               "stages": {str(s): {"accuracy": a} for s, a in ((1, 1.0), (2, 0.99), (3, 1.0), (4, 0.5))},
               "analysis": {"interventions": {"h_zero": {"all": 0.1}, "vision_random": {"all": 0.5}}}}
    text = ex.render_tables([summary])
    assert "| `demo-hops3` | q | 100.0 / 99.0 / 100.0 / 50.0 | 2000 | 42.0 / 100 | - | 10.0 | 50.0 |" in text
    assert "headline figures" not in text  # a summary without the demo's results has no headline row


def test_demo_headline_table_lists_the_report_rows_and_wall_time():
    summary = {"name": "demo-l3", "group": "demo", "question": "q", "commands": ["ivtlr demo --layers 3"],
               "steps": 2000, "wall_seconds": 750, "validation": [], "stages": {"1": {"accuracy": 1.0}},
               "demo": {"cot": 1.0, "ivtlr": 0.97, "nocot": 0.12, "no_latent_text": 0.1, "no_latent_vision": 0.4,
                        "no_latent_part": 0.07, "random_patches": 0.97}}
    text = ex.render_tables([summary])
    assert "| `demo-l3` | 100.0 | 97.0 | 12.0 | 10.0 | 40.0 | 7.0 | 97.0 | - | - | 12.5 |" in text  # an older record
    timed = {**summary, "name": "demo-h96", "latency_ms": {"ivtlr": 30.2, "cot": 89.7},
             "targets": {"met": 11, "of": 13, "missed": ["a", "b"]}}
    assert "| 30.2 vs 89.7 (0.337x) | 11 of 13 (missed: a; b) | 12.5 |" in ex.render_tables([timed])


def test_demo_records_carry_the_time_ratio_and_the_targets(tmp_path, monkeypatch):
    """A demo experiment's record keeps IVT-LR's and CoT's time per question and the report's targets, from the
    run's results.json (the time target is the one a record could not show before)."""
    monkeypatch.chdir(tmp_path)
    exp = ex.Experiment("demo-x", "demo", "q", seed=3)
    demo = ex.ROOT / "demo-x" / "demo"
    (demo / "ivtlr").mkdir(parents=True)
    (demo / "analysis").mkdir()
    (demo / "ivtlr" / "metrics.jsonl").write_text('{"step": 1, "stage": 1, "loss": 0.5}\n')
    (demo / "analysis" / "analysis.json").write_text('{"accuracy": 1.0}')
    row = lambda acc, ms: {"accuracy": {"official_az": acc}, "latency_s": ms / 1000}  # noqa: E731
    results = {"ivtlr": row(1.0, 30.2), "cot": row(1.0, 89.7), "stage_1": row(1.0, 30.2)}
    (demo / "results.json").write_text(json.dumps({"meta": {"judge": "official_az", "wall_seconds": 700},
                                                   "results": results}))
    fast = lambda r: r["ivtlr"]["latency_s"] * 3 <= r["cot"]["latency_s"]  # noqa: E731
    monkeypatch.setattr(ex, "targets", lambda r, meta: [("fast", fast(r), ""), ("right", True, "")])
    out = ex.summarise(exp)
    assert out["latency_ms"] == {"ivtlr": 30.2, "cot": 89.7}
    assert out["targets"] == {"met": 1, "of": 2, "missed": ["fast"]}


def test_latent_runs_evaluate_every_stage_they_train(monkeypatch):
    """A recipe experiment repeats its demo's curriculum: on a demo of one step per read over 3 hops, four latent
    stages, each evaluated with its own latents, the last with the short answer budget, and analysed."""
    base = ex.Experiment("demo-pr", "demo", "q", demo_flags=("--hops", "3", "--step-per-read"))
    rec = ex.Experiment("rec-pr", "recipe", "q", latent_from="demo-pr")
    monkeypatch.setitem(ex.EXPERIMENTS, "demo-pr", base)
    assert ex.latent_stages(rec) == 4 and ex.latent_stages(ex.EXPERIMENTS["rec-k2"]) == 3
    cmds = [" ".join(c) for c in ex.commands(rec)]
    evals = [c for c in cmds if c.startswith("ivtlr eval")]
    assert [c.split("--latents ")[1].split()[0] for c in evals] == ["1", "2", "3", "4"]
    assert "--max-new-tokens 16" in evals[-1] and "--max-new-tokens 128" in evals[2]
    assert "checkpoint rec-pr 4)" in cmds[-1] and cmds[-1].startswith("ivtlr analyze")
    assert ex.latent_stages(ex.Experiment("x", "latent", "q", latent_from="s0-demo",
                                          train={"curriculum.max_latent_stage": 2})) == 2


def test_published_records_name_the_registry_commands():
    """Each docs/experiments record quotes the commands and question that the registry gives now, so a record
    cannot drift from the command that repeats it (a changed default that an experiment relied on must then be
    named in that experiment's flags)."""
    records = sorted((Path(__file__).parents[1] / ex.DOCS).glob("*.json"))
    assert records, "docs/experiments has the published records"
    for path in records:
        record = json.loads(path.read_text())
        e = ex.EXPERIMENTS[record["name"]]
        assert record["commands"] == ex.shell_commands(e), path.name
        assert record["question"] == e.question, path.name


def test_commands_find_this_environments_ivtlr_without_activating_it(monkeypatch):
    """The records quote `ivtlr ...`; run from a virtual environment that is not activated, the commands still
    reach its `ivtlr`, not another one or none (they used to fail with `ivtlr: command not found`)."""
    import shutil
    import sys

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    env = ex.command_env(1)
    assert env["OMP_NUM_THREADS"] == "1"
    assert Path(shutil.which("ivtlr", path=env["PATH"])).parent == Path(sys.executable).parent
