"""Third-party plugins extend every registry and see every lifecycle hook."""

from __future__ import annotations

import json

EXTENSION = '''
import json
import ftkit
from ftkit.plan.anatomy import AnatomyProvider, from_prefixes


class Toy:
    """Marker base so the anatomy provider can recognise its models."""


def build_toy(rest, *, num_classes, task):
    import torch
    from torch import nn

    class ToyNet(nn.Sequential, Toy):
        pass

    width = int(rest)
    return ToyNet(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                  nn.Conv2d(width, num_classes, 1))


def toy_anatomy(model):
    return from_prefixes(model, [("body", ["0", "1"], "backbone"), ("out", ["3"], "head")],
                         "toy")


def dots(*, task, image_size, num_samples, seed):
    from ftkit.data.builtin import shapes

    return shapes(task=task, image_size=image_size, num_samples=num_samples, seed=seed + 7)


@ftkit.hookimpl
def ftkit_register_models(register):
    register(ftkit.ModelFamily("toy", build_toy))


@ftkit.hookimpl
def ftkit_register_anatomies(register):
    register(AnatomyProvider("toy", lambda m: isinstance(m, Toy), toy_anatomy, priority=50))


@ftkit.hookimpl
def ftkit_register_datasets(register):
    register(ftkit.Dataset("dots", dots))


EVENTS = []


def log(*event):
    EVENTS.append(list(event))
    with open("events.json", "w") as fh:
        json.dump(EVENTS, fh)


@ftkit.hookimpl
def ftkit_run_start(run):
    log("run_start", run.start_epoch, run.plan.strategy)


@ftkit.hookimpl
def ftkit_stage_start(run, stage, index):
    log("stage_start", index, stage.name)


@ftkit.hookimpl
def ftkit_epoch_end(run, record):
    log("epoch_end", record["epoch"], round(record["val_miou"], 6))
    if record["epoch"] == 2:
        run.request_stop("plugin-said-so")


@ftkit.hookimpl
def ftkit_run_end(run, summary):
    log("run_end", summary["stop_reason"])
'''


TOY = [
    "--plugin",
    "ext",
    "--model",
    "toy:8",
    "--data",
    "builtin:dots",
    "--strategy",
    "gradual",
    "-o",
    "every=1",
]


def test_models_anatomies_and_datasets_from_a_plugin(ftkit, tmp_path):
    (tmp_path / "ext.py").write_text(EXTENSION)
    result = ftkit("plan", *TOY, "--epochs", "2", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert [s["name"] for s in plan["stages"]] == ["head", "+body"]
    head = plan["stages"][0]
    # the head is the 1x1 conv: 8 * 5 weights + 5 biases (5 shapes classes)
    assert sum(g["num_params"] for g in head["groups"]) == 45
    assert sorted(head["frozen"]) == ["0.bias", "0.weight", "1.bias", "1.weight"]


def test_lifecycle_hooks_and_request_stop(ftkit, tmp_path):
    (tmp_path / "ext.py").write_text(EXTENSION)
    result = ftkit(
        "run", *TOY, "--epochs", "4", "--image-size", "32", "--num-samples", "32", "--out", "run"
    )
    assert result.returncode == 0, result.stderr
    events = json.loads((tmp_path / "events.json").read_text())
    records = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().split("\n") if x]
    assert events == [
        ["run_start", 1, "gradual"],
        ["stage_start", 0, "head"],
        ["epoch_end", 1, round(records[0]["val_miou"], 6)],
        ["stage_start", 1, "+body"],
        ["epoch_end", 2, round(records[1]["val_miou"], 6)],
        ["run_end", "plugin-said-so"],
    ]
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["stop_reason"] == "plugin-said-so"
