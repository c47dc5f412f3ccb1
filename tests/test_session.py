"""One readable engine (issue 11): one process speaks for a torchrun run,
``ftkit_run_end`` hears how every run ended, and ``plan --plot`` draws the
steps that training takes."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import read_jsonl, torchrun

from ftkit.config import Config
from ftkit.engine.console import Console
from ftkit.engine.rundir.resume import open_resume
from ftkit.plan import steps_per_epoch

# A toy model keeps each run to seconds. On request, the plugin interrupts its
# own run after epoch 1 (SIGINT, as Ctrl-C does) or fails in it; it records
# every ftkit_run_end call.
PLUGIN = """
import json, os, signal
import ftkit
from torch import nn


@ftkit.hookimpl
def ftkit_register_models(register):
    register(ftkit.ModelFamily("toy", lambda rest, *, num_classes, task: nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, num_classes, 1))))


@ftkit.hookimpl
def ftkit_epoch_end(run, record):
    how = os.environ.get("END_HOW")
    if record["epoch"] == 1 and how == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    if record["epoch"] == 1 and how == "raise":
        raise RuntimeError("a plugin failed")
    if record["epoch"] == 3 and how == "stop":
        run.request_stop("enough")
    if os.environ.get("LAST_LOG"):  # the epoch `last` holds (it is written after this hook)
        from ftkit.checkpoint import load_state
        last = run.dir / "checkpoints" / "last.pt"
        epoch = load_state(last)["run"]["epoch"] if last.exists() else None
        with open(os.environ["LAST_LOG"], "a") as fh:
            fh.write(json.dumps(epoch) + "\\n")


@ftkit.hookimpl
def ftkit_run_end(run, summary):
    with open(os.environ["END_LOG"], "a") as fh:
        fh.write(json.dumps({"stop_reason": summary["stop_reason"],
                             "epochs_run": summary["epochs_run"]}) + "\\n")
"""
TINY = ["--image-size", "32", "--num-samples", "16", "--batch-size", "4"]
RUN = ["run", "--plugin", "ender", "--model", "toy:x", "--strategy", "full", *TINY]


def test_a_console_on_another_rank_says_nothing(capsys):
    for console in (Console(main=False), Console(main=True)):
        console.say("hello")
        console.warn("careful")
    out, err = capsys.readouterr()
    assert out == "hello\n"
    assert err == "ftkit: warning: careful\n"


def test_resume_speaks_through_the_console(tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    (tmp_path / "config.toml").write_text(Config().to_toml())
    (tmp_path / "summary.json").write_text('{"stop_reason": "completed"}')
    assert open_resume(str(tmp_path), Config(), Console(main=False)) is None
    assert capsys.readouterr().out == ""
    assert open_resume(str(tmp_path), Config(), Console(main=True)) is None
    assert "already finished (completed)" in capsys.readouterr().out


def test_torchrun_resume_speaks_once(ftkit, tmp_path):
    (tmp_path / "ender.py").write_text(PLUGIN)
    env = {"END_LOG": str(tmp_path / "ends.jsonl")}
    done = ftkit(*RUN, "--epochs", "1", "--out", "done", env=env)
    assert done.returncode == 0, done.stderr
    both = subprocess.run(
        [
            *torchrun(),
            "run",
            "--resume",
            "done",
            "--device",
            "cpu",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert both.returncode == 0, both.stderr[-3000:]
    assert both.stdout.count("already finished (completed)") == 1, both.stdout


def ends(tmp_path) -> list[dict]:
    path = tmp_path / "ends.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(
    "how, code, reason",
    [("", 0, "completed"), ("sigint", 130, "interrupted"), ("raise", 1, "error")],
)
def test_run_end_hears_how_the_run_ended(ftkit, tmp_path, how, code, reason):
    (tmp_path / "ender.py").write_text(PLUGIN)
    env = {"END_HOW": how, "END_LOG": str(tmp_path / "ends.jsonl")}
    result = ftkit(*RUN, "--epochs", "3", "--out", "run", env=env)
    assert result.returncode == code, result.stderr
    assert ends(tmp_path) == [{"stop_reason": reason, "epochs_run": 3 if how == "" else 1}]
    # only a finished run has a summary.json: an interrupted one stays resumable
    assert (tmp_path / "run" / "summary.json").exists() == (how == "")
    if how == "sigint":
        assert "resume with: ftkit run --resume run" in result.stderr


@pytest.mark.parametrize(
    "how, held, final", [("", [None, None, 2, 2, 4], 5), ("stop", [None, None, 2], 3)]
)
def test_save_every_writes_last_every_n_epochs_and_when_the_run_stops(
    ftkit, tmp_path, how, held, final
):
    from ftkit.checkpoint import load_state

    (tmp_path / "ender.py").write_text(PLUGIN)
    log = tmp_path / "last.jsonl"
    env = {"END_HOW": how, "END_LOG": str(tmp_path / "ends.jsonl"), "LAST_LOG": str(log)}
    result = ftkit(*RUN, "--epochs", "5", "--save-every", "2", "--out", "run", env=env)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in log.read_text().splitlines()] == held
    assert load_state(tmp_path / "run/checkpoints/last.pt")["run"]["epoch"] == final


def test_a_failure_before_the_first_last_keeps_the_trained_epochs(ftkit, tmp_path):
    # --save-every 3 and an error in epoch 1's hooks: no `last` yet, but a trained epoch
    (tmp_path / "ender.py").write_text(PLUGIN)
    env = {"END_HOW": "raise", "END_LOG": str(tmp_path / "ends.jsonl")}
    result = ftkit(*RUN, "--epochs", "3", "--save-every", "3", "--out", "run", env=env)
    assert result.returncode == 1
    assert [r["epoch"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1]
    assert "removed" not in result.stderr


def test_steps_per_epoch_counts_optimizer_steps():
    assert steps_per_epoch(50, 4) == 12
    assert steps_per_epoch(50, 4, accumulate=2) == 6  # the partial 7th step is dropped
    assert steps_per_epoch(50, 4, accumulate=2, world_size=2) == 3  # 25 samples per rank


def test_plan_plot_draws_the_steps_that_training_takes(tmp_path, monkeypatch):
    import ftkit.plan_report
    from ftkit.cli import main

    drawn: list[int] = []

    def plot_plan(plan, steps, path):
        figure = ftkit.plan_report.plan_figure(plan, steps)
        drawn.append(max(len(line.get_xdata()) for line in figure.axes[0].get_lines()))

    monkeypatch.setattr(ftkit.plan_report, "plot_plan", plot_plan)
    monkeypatch.chdir(tmp_path)
    args = ["plan", "--epochs", "2", "--strategy", "full", *TINY, "--num-samples", "64"]
    main([*args, "--plot", "one.png"])
    main([*args, "--plot", "two.png", "--accumulate", "2"])
    # 51 training samples in batches of 4: 12 steps an epoch, 6 when 2 batches make a step
    assert drawn == [2 * 12, 2 * 6]
