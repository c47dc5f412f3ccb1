"""The Python API (ftkit.plan_run, ftkit.run, ftkit.evaluate): README's
example as it stands, and the CLI's checks and results from Python."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import ftkit
from ftkit.engine.summary import json_text
from tests.conftest import ROOT, read_jsonl

TINY = dict(data="builtin:shapes", num_samples=16, image_size=32, batch_size=8)


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- tests/test_api.py runs this block -->", 1)[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "head 3e-06" in out  # seed 004's stage-1 head LR, as the comment says
    assert (tmp_path / "runs/baseline/summary.json").is_file()
    summary = json.loads((tmp_path / "runs/switch/summary.json").read_text())
    assert summary["stop_reason"] in ("completed", "early-stopping", "baseline-guard")
    assert summary["baseline"] is not None  # a loss switch from the baseline compares with it


def test_plan_run_is_what_plan_prints(tmp_path):
    from click.testing import CliRunner

    from ftkit.cli import cli

    planned = ftkit.plan_run(strategy="two-stage", lr=1e-5, epochs=2, **TINY)
    args = ["plan", "--strategy", "two-stage", "--lr", "1e-5", "--epochs", "2", "--json"]
    args += ["--data", "builtin:shapes", "--num-samples", "16", "--image-size", "32"]
    result = CliRunner().invoke(cli, [*args, "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == planned.to_json()
    assert planned.table().startswith("strategy two-stage on smp:unet:resnet18")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lrr": 1e-3}, "ftkit.plan_run: unknown option 'lrr' (did you mean 'lr'?)"),
        ({"max_lenght": 64}, "ftkit.plan_run: unknown option 'max_lenght'"),
        ({"lr": -1.0}, "--lr"),
        ({"strategy": "two-stag"}, "unknown strategy 'two-stag'"),
        ({"options": {"backbone_dv": 10}, "strategy": "two-stage"}, "backbone_dv"),
    ],
)
def test_bad_keywords_raise_the_clis_usage_error(kwargs, message):
    with pytest.raises(ftkit.UsageError) as raised:
        ftkit.plan_run(**{**TINY, **kwargs})
    assert message in str(raised.value)


@pytest.mark.slow
def test_run_returns_how_it_ended_and_evaluate_scores_it(tmp_path):
    outcome = ftkit.run(
        strategy="freeze", task="classification", model="tv:resnet18", lr=1e-3, epochs=1,
        out=str(tmp_path / "r"), **TINY,
    )  # fmt: skip
    assert (outcome.stop_reason, outcome.dir, outcome.exit_code) == ("completed", tmp_path / "r", 0)
    assert isinstance(outcome.summary, ftkit.Summary)
    written = json.loads((tmp_path / "r/summary.json").read_text())
    assert json.loads(json_text(outcome.summary.to_json())) == written
    (row,) = read_jsonl(tmp_path / "r/metrics.jsonl")
    metrics = ftkit.evaluate(str(tmp_path / "r"))
    assert metrics["val_accuracy"] == pytest.approx(row["val_accuracy"])
    assert Path(metrics["checkpoint"]) == tmp_path / "r"
    again = ftkit.run(resume=str(tmp_path / "r"))  # finished: nothing to resume
    assert (again.stop_reason, again.dir, again.summary) == ("completed", tmp_path / "r", None)
