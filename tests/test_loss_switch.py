"""Loss-switch fine-tuning from a converged baseline: --from, the epoch-0
baseline record, the baseline guard's diagnoses and the before/after report."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from conftest import one_line_error

from ftkit.engine.stoppers import BaselineGuard

SMALL = [
    "--image-size",
    "32",
    "--num-samples",
    "48",
    "--batch-size",
    "8",
    "--model",
    "smp:unet:tu-mobilenetv3_small_050",
]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    where = tmp_path_factory.mktemp("baseline")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ftkit",
            "run",
            "--strategy",
            "full",
            "--epochs",
            "1",
            *SMALL,
            "--out",
            "base",
        ],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return where / "base"


def test_loss_switch_records_the_baseline_and_compares(baseline, ftkit, tmp_path):
    weights = baseline / "checkpoints" / "best.safetensors"
    before = digest(weights)
    result = ftkit(
        "run",
        "--strategy",
        "loss-switch",
        "--from",
        str(baseline),
        "--lr",
        "1e-5",
        "--epochs",
        "2",
        *SMALL,
        "--out",
        "switch",
    )
    assert result.returncode == 0, result.stderr
    assert digest(weights) == before  # the baseline is never modified
    records = [json.loads(x) for x in (tmp_path / "switch/metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["stage"]) for r in records] == [
        (0, "baseline"),
        (1, "head"),
        (2, "backbone+head"),
    ]
    summary = json.loads((tmp_path / "switch/summary.json").read_text())
    assert summary["baseline"]["val_miou"] == records[0]["val_miou"]
    assert summary["baseline"]["val_loss"] == records[0]["val_loss"]
    assert summary["diagnosis"] in ("healthy", "lr-too-low")
    final, base = summary["final"]["val_iou_per_class"], summary["baseline"]["val_iou_per_class"]
    for name, after, before_iou in zip(summary["class_names"], final, base, strict=False):
        assert summary["delta_per_class"][name] == pytest.approx(after - before_iou)
    assert "star" in summary["rare_classes"]
    assert "class weights (auto):" in result.stdout
    assert "baseline   final  best (epoch " in result.stdout
    assert "best: the row of the epoch with the best val_miou, not each metric's" in result.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "switch/tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/miou")] == [0, 1, 2]
    assert "diagnosis" in "".join(events.Tags()["tensors"])


def test_from_with_another_class_count(baseline, ftkit):
    line = one_line_error(
        ftkit("run", "--from", str(baseline), "--num-classes", "7", "--epochs", "2", *SMALL)
    )
    assert "does not fit the model" in line
    assert "segmentation_head.0.weight (5, 16, 3, 3) vs (7, 16, 3, 3)" in line


def test_from_with_another_architecture(baseline, ftkit):
    line = one_line_error(
        ftkit(
            "run",
            "--from",
            str(baseline),
            "--epochs",
            "2",
            *SMALL[:-1],
            "smp:fpn:tu-mobilenetv3_small_050",
        )
    )
    assert "does not fit the model" in line and "decoder." in line


def test_from_a_missing_file(ftkit):
    line = one_line_error(ftkit("run", "--from", "nowhere.safetensors", *SMALL))
    assert line == "ftkit: error: --from 'nowhere.safetensors' not found"


def guard(**kw):
    return BaselineGuard(baseline_metric=0.65, baseline_loss=0.450, **kw)


def test_lr_too_high_stops_on_the_second_falling_epoch():
    g = guard()  # seed 004's "too high" trajectory
    assert g.update(0.55, 0.550) is None
    assert g.update(0.52, 0.580) == "lr-too-high"


def test_below_the_baseline_for_the_whole_watch_is_too_high():
    g = guard(epochs=3)  # a drop that climbs back a little, but never to the baseline
    assert g.update(0.60, 0.50) is None
    assert g.update(0.61, 0.49) is None
    assert g.update(0.62, 0.48) == "lr-too-high"


def test_one_dip_that_recovers_is_not_a_stop():
    g = guard()
    assert g.update(0.60, 0.50) is None
    assert g.update(0.62, 0.48) is None  # below, but no longer falling
    assert g.diagnosis == "healthy"


def test_lr_too_low_when_nothing_moves():
    g = guard()  # seed 004's "too low" trajectory
    for miou, loss in [
        (0.650, 0.4500),
        (0.650, 0.4499),
        (0.651, 0.4498),
        (0.651, 0.4497),
        (0.651, 0.4496),
    ]:
        assert g.update(miou, loss) is None
    assert g.diagnosis == "lr-too-low"


def test_healthy_when_it_improves():
    g = guard()  # seed 004's "normal" trajectory
    for miou, loss in [(0.65, 0.45), (0.66, 0.44), (0.67, 0.435), (0.68, 0.428), (0.68, 0.425)]:
        assert g.update(miou, loss) is None
    assert g.diagnosis == "healthy"


def test_guard_only_watches_its_epochs():
    g = guard(epochs=2)
    g.update(0.66, 0.44)
    g.update(0.67, 0.43)
    assert g.update(0.10, 0.90) is None and g.update(0.05, 0.95) is None
    assert g.diagnosis == "healthy"


def test_classification_loss_switch(ftkit, tmp_path):
    common = [
        "--task",
        "classification",
        "--model",
        "tv:resnet18",
        "--image-size",
        "32",
        "--num-samples",
        "48",
    ]
    assert (
        ftkit("run", "--strategy", "full", "--epochs", "1", *common, "--out", "base").returncode
        == 0
    )
    result = ftkit(
        "run",
        "--strategy",
        "loss-switch",
        "--from",
        "base",
        "--loss",
        "focal",
        "--class-weights",
        "inverse",
        "--epochs",
        "2",
        *common,
        "--out",
        "switch",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "switch/summary.json").read_text())
    assert summary["monitor"] == "val_accuracy"
    assert {"val_accuracy", "val_macro_f1"} <= set(summary["baseline"])
    assert set(summary["delta_per_class"]) == set(summary["class_names"])
