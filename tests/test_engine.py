"""`ftkit run` end to end on tiny data, and the loop's guards in isolation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import RUN_FILES, one_line_error

from ftkit.engine.stoppers import EarlyStopping
from ftkit.engine.train.guards import GradNormAlert, NonFinite
from ftkit.engine.train.loop import Loop, NonFiniteStop
from ftkit.engine.train.staging import apply_stage, make_optimizer
from ftkit.optimizers import Optimizer, adamw
from ftkit.plan import ParamGroup, Stage

TINY = ["--image-size", "32", "--num-samples", "48", "--batch-size", "8"]


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    """One two-stage segmentation run shared by the tests that read it."""
    import subprocess
    import sys

    where = tmp_path_factory.mktemp("seg")
    result = subprocess.run(
        [sys.executable, "-m", "ftkit", "run", "--epochs", "2", *TINY, "--out", "run"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return where / "run", result


def test_segmentation_run_directory(seg_run, ftkit):
    run, result = seg_run
    assert sorted(p.name for p in run.iterdir()) == RUN_FILES
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.safetensors",
        "last.pt",
        "start.safetensors",
    ]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["stage"]) for r in records] == [(1, "head"), (2, "backbone+head")]
    for r in records:
        assert {
            "train_loss",
            "val_loss",
            "val_miou",
            "val_iou_per_class",
            "val_pixel_accuracy",
            "lr",
            "grad_norm",
            "seconds",
        } <= set(r)
        assert len(r["val_iou_per_class"]) == 5
        assert r["grad_norm"]["max"] >= r["grad_norm"]["mean"] > 0
    assert set(records[0]["lr"]) == {"head"}
    assert set(records[1]["lr"]) == {"backbone", "head"}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "completed"
    assert summary["final"]["epoch"] == 2
    assert summary["best"]["val_miou"] == max(r["val_miou"] for r in records)
    assert "tensorboard --logdir" in result.stdout
    assert "epoch   2 [backbone+head]" in result.stdout


def test_run_executes_the_plan_that_plan_prints(seg_run, ftkit):
    run, _ = seg_run
    printed = json.loads(ftkit("plan", "--json", "--epochs", "2", *TINY).stdout)
    assert json.loads((run / "plan.json").read_text()) == printed


def test_tensorboard_events_hold_the_expected_tags(seg_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = seg_run
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "loss/train",
        "loss/val",
        "val/miou",
        "val/pixel_accuracy",
        "lr/head",
        "lr/backbone",
        "grad_norm/mean",
        "grad_norm/max",
        "params/trainable",
        "iou_per_class/star",
    } <= tags
    assert [e.step for e in events.Scalars("val/miou")] == [1, 2]
    assert events.Tags()["images"] == ["val/input|truth|prediction"]


def test_eval_reproduces_the_best_epoch(seg_run, ftkit):
    run, _ = seg_run
    result = ftkit("eval", "--checkpoint", str(run), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    summary = json.loads((run / "summary.json").read_text())
    assert metrics["val_miou"] == pytest.approx(summary["best"]["val_miou"], abs=1e-9)


def test_out_refuses_an_existing_run(seg_run, ftkit):
    run, _ = seg_run
    before = (run / "checkpoints" / "last.pt").read_bytes()
    line = one_line_error(ftkit("run", "--out", str(run), *TINY))
    assert f"--out '{run}' already exists" in line
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_classification_run(ftkit, tmp_path):
    result = ftkit(
        "run",
        "--task",
        "classification",
        "--model",
        "tv:resnet18",
        "--strategy",
        "freeze",
        "--epochs",
        "1",
        *TINY,
        "--out",
        "run",
    )
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert {"val_accuracy", "val_macro_f1", "val_f1_per_class"} <= set(record)
    assert 0.0 <= record["val_accuracy"] <= 1.0


NAN_LOSS = """
import ftkit

@ftkit.hookimpl
def ftkit_register_losses(register):
    register(ftkit.Loss("nan", lambda **kw: lambda logits, target: logits.sum() * float("nan")))
"""


def test_persistent_nan_stops_with_exit_3(ftkit, tmp_path):
    (tmp_path / "nanloss.py").write_text(NAN_LOSS)
    result = ftkit(
        "run",
        "--plugin",
        "nanloss",
        "--loss",
        "nan",
        "--epochs",
        "2",
        *TINY,
        "--out",
        "run",
        "--max-nonfinite-steps",
        "3",
    )
    assert result.returncode == 3, result.stderr
    assert "3 non-finite steps in a row" in result.stderr
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["stop_reason"] == "non-finite"
    assert not (tmp_path / "run/checkpoints/last.pt").exists()


def tiny_loop(loss_fn, limit=5):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    group = ParamGroup("all", ("0.weight", "0.bias"), 0.1, num_params=15, bn_mode="train")
    stage = Stage("all", 1, (group,), loss="ce", schedule="constant", bn_mode="eval")
    optimizer = make_optimizer(Optimizer("adamw", adamw), model)
    apply_stage(model, optimizer, stage)
    loop = Loop(model, optimizer, torch.device("cpu"), nonfinite=NonFinite(limit))
    data = [(torch.randn(2, 4), torch.tensor([0, 1])) for _ in range(4)]
    return model, loop, stage, data


def test_a_nan_step_is_skipped_with_weights_untouched():
    calls = []

    def sometimes_nan(logits, target):
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(logits, target)
        return loss * float("nan") if len(calls) == 2 else loss

    model, loop, stage, data = tiny_loop(sometimes_nan)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights_after = []
    stats = loop.train_epoch(data[:1], sometimes_nan, stage, 0, 4)
    weights_after.append({k: v.clone() for k, v in model.state_dict().items()})
    stats = loop.train_epoch(data[1:2], sometimes_nan, stage, 1, 4)  # the NaN step
    assert stats.skipped == 1 and stats.steps == 1
    assert all(torch.equal(v, weights_after[0][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert loop.nonfinite.total == 1


def test_persistent_nans_raise():
    def always_nan(logits, target):
        return logits.sum() * float("nan")

    _, loop, stage, data = tiny_loop(always_nan, limit=3)
    with pytest.raises(NonFiniteStop, match="3 non-finite steps in a row"):
        loop.train_epoch(data, always_nan, stage, 0, 4)


def test_clip_grad_norm_clips_and_reports_the_unclipped_norm():
    model, loop, stage, data = tiny_loop(None)
    loop.clip_grad_norm = 1e-3

    def big(logits, target):
        return 1e4 * torch.nn.functional.cross_entropy(logits, target)

    stats = loop.train_epoch(data[:1], big, stage, 0, 4)
    assert stats.grad_norm_max > 1.0  # the norm before clipping is what gets logged


def test_grad_norm_alert_needs_a_streak():
    alert = GradNormAlert(10.0, window=3)
    assert [alert.update(n) for n in (11, 12, 1, 11, 12)] == [None] * 5
    assert "above 10 for 3 steps" in alert.update(13)
    assert alert.update(14) is None  # said once


def test_early_stopping():
    stopper = EarlyStopping("val_miou", patience=2, min_delta=0.01)
    assert stopper.update(1, {"val_miou": 0.5})
    assert not stopper.update(2, {"val_miou": 0.505})  # below min_delta
    assert not stopper.should_stop
    assert not stopper.update(3, {"val_miou": float("nan")})
    assert stopper.should_stop and stopper.best_epoch == 1
    loss = EarlyStopping("val_loss", patience=None)
    assert loss.mode == "min" and loss.update(1, {"val_loss": 1.0})
    assert loss.update(2, {"val_loss": 0.5}) and not loss.should_stop
    assert math.isclose(loss.best, 0.5)


@pytest.mark.parametrize(
    "mode, trained_bn_trains, frozen_bn_trains",
    [("eval", True, False), ("train", True, True), ("frozen", False, False)],
)
def test_bn_modes(mode, trained_bn_trains, frozen_bn_trains):
    from ftkit.engine.train.staging import set_train_mode

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1),
        torch.nn.BatchNorm2d(4),
        torch.nn.Conv2d(4, 2, 1),
        torch.nn.BatchNorm2d(2),
    )
    head = ("2.weight", "2.bias", "3.weight", "3.bias")
    stage = Stage(
        "s",
        1,
        (ParamGroup("head", head, 0.1, num_params=14, bn_mode="train"),),
        loss="ce",
        schedule="constant",
        frozen=("0.weight", "0.bias", "1.weight", "1.bias"),
        bn_mode=mode,
    )
    set_train_mode(model, stage)
    assert (model[3].training, model[1].training) == (trained_bn_trains, frozen_bn_trains)
