"""One typed door for every plugin: each registration hook takes one object of
its own type, tasks and optimizers come from plugins too, and a misspelled hook
is an error rather than a plugin that silently does nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import one_line_error, read_jsonl

TINY = ["--image-size", "32", "--num-samples", "16", "--batch-size", "4", "--epochs", "1"]
# Four groups with their own LRs, held constant so each epoch's LR is the plan's.
GROUPS = ["--strategy", "discriminative", "-o", "schedule=constant"]

DOOR = """
import json
import ftkit
from ftkit.tasks import classification_metrics


def note(what):
    with open(what + ".json", "w") as fh:
        json.dump(what, fh)


def scene_metrics(num_classes, *, ignore_index, device):
    note("metrics")
    return classification_metrics(num_classes, ignore_index=ignore_index, device=device)


def recorded_sgd(param_groups):
    import torch

    note("optimizer")
    return torch.optim.SGD(param_groups, lr=0.0)


@ftkit.hookimpl
def ftkit_register_tasks(register):
    register(ftkit.Task("scene", "classification", "val_macro_f1",
                        ("val_macro_f1", "val_accuracy", "val_loss"), scene_metrics,
                        "f1_per_class"))


@ftkit.hookimpl
def ftkit_register_optimizers(register):
    register(ftkit.Optimizer("recorded-sgd", recorded_sgd))
"""


def plan_lrs(run_dir):
    """Each group's LR in the plan, by the name metrics.jsonl uses."""
    stage = json.loads((run_dir / "plan.json").read_text())["stages"][0]
    return {g["name"].split("/")[0]: g["lr"] for g in stage["groups"]}


def test_task_and_optimizer_from_a_plugin_drive_a_run(ftkit, tmp_path):
    (tmp_path / "door.py").write_text(DOOR)
    args = ["--plugin", "door", "--task", "scene", "--optimizer", "recorded-sgd"]
    result = ftkit("run", *args, *GROUPS, *TINY, "--out", "run")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "optimizer.json").exists()
    [record] = read_jsonl(tmp_path / "run/metrics.jsonl")
    assert "val_macro_f1" in record and "val_miou" not in record
    assert record["lr"] == plan_lrs(tmp_path / "run")
    assert len(set(record["lr"].values())) == 4  # early..head: per-group LRs survived the build
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["monitor"] == "val_macro_f1"


def test_a_timm_optimizer_by_name(ftkit, tmp_path):
    plan = ftkit("plan", "--task", "classification", "--optimizer", "lamb", *GROUPS, *TINY)
    assert plan.returncode == 0, plan.stderr
    assert "optimizer lamb" in plan.stdout
    result = ftkit(
        "run", "--task", "classification", "--optimizer", "lamb", *GROUPS, *TINY, "--out", "run"
    )
    assert result.returncode == 0, result.stderr
    [record] = read_jsonl(tmp_path / "run/metrics.jsonl")
    assert record["lr"] == plan_lrs(tmp_path / "run")
    import torch

    state = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert "trust_clip" in state["loop"]["optimizer"]["param_groups"][0]  # timm's Lamb


@pytest.mark.parametrize(
    "flag, name, expected",
    [
        ("--optimizer", "lamx", "unknown optimizer 'lamx' (did you mean 'lamb'?)"),
        ("--optimizer", "adamww", "unknown optimizer 'adamww' (did you mean 'adamw'?)"),
        ("--task", "segmentaton", "unknown task 'segmentaton' (did you mean 'segmentation'?)"),
    ],
)
def test_unknown_names_suggest_the_closest(ftkit, flag, name, expected):
    assert expected in one_line_error(ftkit("plan", flag, name))


def test_misspelled_hook_names_the_plugin_and_the_hook(ftkit, tmp_path):
    (tmp_path / "typo.py").write_text(
        "import ftkit\n\n@ftkit.hookimpl\ndef ftkit_register_strategy(register):\n    pass\n"
    )
    line = one_line_error(ftkit("strategies", "--plugin", "typo"))
    assert "plugin 'typo' defines unknown hook 'ftkit_register_strategy'" in line
    assert "(did you mean 'ftkit_register_strategies'?)" in line


def test_trace_plugins_writes_hook_calls_to_stderr(ftkit):
    result = ftkit("strategies", env={"FTKIT_TRACE_PLUGINS": "1"})
    assert result.returncode == 0, result.stderr
    assert "ftkit_register_strategies" in result.stderr
    assert "ftkit.strategies.two_stage" in result.stderr


WRONG = """
import ftkit
from ftkit.plan.strategy import Strategy

@ftkit.hookimpl
def {hook}(register):
    register({value})
"""


@pytest.mark.parametrize(
    "hook, value, expected",
    [
        (
            "ftkit_register_strategies",
            "'oops'",
            "a str in ftkit_register_strategies; expected an ftkit.Strategy",
        ),
        (
            "ftkit_register_strategies",
            "'x', lambda: 0",
            "2 arguments in ftkit_register_strategies; expected an ftkit.Strategy",
        ),
        (
            "ftkit_register_models",
            "'oops'",
            "a str in ftkit_register_models; expected an ftkit.ModelFamily",
        ),
        (
            "ftkit_register_anatomies",
            "'oops'",
            "a str in ftkit_register_anatomies; expected an ftkit.AnatomyProvider",
        ),
        (
            "ftkit_register_losses",
            "Strategy('s', '', print)",
            "a Strategy in ftkit_register_losses; expected an ftkit.Loss",
        ),
        ("ftkit_register_losses", "'ce2', 3", "2 arguments in ftkit_register_losses"),
        (
            "ftkit_register_models",
            "'toy', print",
            "2 arguments in ftkit_register_models; "
            "expected an ftkit.ModelFamily (register(ftkit.ModelFamily('toy', ...)))",
        ),
        (
            "ftkit_register_datasets",
            "'oops'",
            "a str in ftkit_register_datasets; expected an ftkit.Dataset",
        ),
        (
            "ftkit_register_tasks",
            "'scene', print",
            "2 arguments in ftkit_register_tasks; expected an ftkit.Task",
        ),
        (
            "ftkit_register_optimizers",
            "'oops'",
            "a str in ftkit_register_optimizers; expected an ftkit.Optimizer",
        ),
    ],
)
def test_each_registration_rejects_the_wrong_object(ftkit, tmp_path, hook, value, expected):
    (tmp_path / "bad.py").write_text(WRONG.format(hook=hook, value=value))
    line = one_line_error(ftkit("plan", "--plugin", "bad"))
    assert f"plugin 'bad' registered {expected}" in line


def test_the_facade_has_what_a_plugin_author_needs_without_torch():
    code = (
        "import sys, ftkit\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(' '.join(ftkit.__all__))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    names = set(result.stdout.split())
    kinds = {"Strategy", "ModelFamily", "AnatomyProvider", "Loss", "Dataset", "Task", "Optimizer"}
    assert kinds | {"hookimpl", "Option"} <= names
