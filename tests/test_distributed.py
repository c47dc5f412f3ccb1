"""torchrun with 2 processes (gloo, CPU) computes what one process computes
over the same global batches."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from conftest import RUN_FILES, read_jsonl, torchrun

# No BatchNorm: per-rank batch statistics would differ from a single batch's.
TOY = """
import ftkit
from torch import nn


@ftkit.hookimpl
def ftkit_register_models(register):
    register(ftkit.ModelFamily("toy", lambda rest, *, num_classes, task: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))))
"""
ARGS = [
    "run",
    "--plugin",
    "toy",
    "--model",
    "toy:x",
    "--strategy",
    "full",
    "--epochs",
    "2",
    "--image-size",
    "32",
    "--num-samples",
    "48",
    "--lr",
    "1e-2",
    "--no-augment",
]


# staged strategies change the DDP wrapper's parameters at the unfreeze
STRATEGIES = {
    "full": [],
    "two-stage": ["--strategy", "two-stage", "-o", "stage1_epochs=1"],
    "gradual": ["--strategy", "gradual", "-o", "every=1"],
}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_gloo_processes_match_one(ftkit, tmp_path, strategy):
    (tmp_path / "toy.py").write_text(TOY)
    args = [*ARGS, *STRATEGIES[strategy]]
    single = ftkit(*args, "--batch-size", "8", "--out", "single")
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [
            *torchrun(),
            *args,
            "--batch-size",
            "4",
            "--out",
            "ddp",
            "--device",
            "cpu",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = (
        read_jsonl(tmp_path / "single/metrics.jsonl"),
        read_jsonl(tmp_path / "ddp/metrics.jsonl"),
    )
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "val_loss", "val_miou", "val_pixel_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
        assert b["val_confusion_matrix"] == a["val_confusion_matrix"]
        assert b["grad_norm"]["mean"] == pytest.approx(a["grad_norm"]["mean"], rel=1e-4)
    # only rank 0 wrote, and wrote everything once
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == RUN_FILES
    assert ddp.stdout.count("completed after 2 epoch(s)") == 1


SLOW_EPOCH_END = """
import os, time
import ftkit


@ftkit.hookimpl
def ftkit_epoch_end(run, record):
    if record["epoch"] == 1:
        open("epoch1.done", "w").close()
        time.sleep(3)  # rank 0 here, rank 1 waiting in epoch 2: SIGTERM lands now
"""


def test_sigterm_under_torchrun_leaves_a_resumable_run_and_one_line(tmp_path):
    (tmp_path / "toy.py").write_text(TOY)
    (tmp_path / "slow.py").write_text(SLOW_EPOCH_END)
    args = [*ARGS, "--plugin", "slow", "--epochs", "3", "--batch-size", "4", "--device", "cpu"]
    args += ["--strategy", "two-stage", "-o", "stage1_epochs=1"]
    proc = subprocess.Popen(
        [*torchrun(), *args, "--out", "run"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while not (tmp_path / "epoch1.done").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    out, err = proc.communicate(timeout=240)
    assert err.count("SIGTERM: stopped at batch") == 1, err[-3000:]  # rank 0 only
    assert "resume with: ftkit run --resume run" in err
    assert not (tmp_path / "run" / "summary.json").exists()
    resumed = subprocess.run(
        [*torchrun(), "run", "--resume", "run", "--device", "cpu"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming run after epoch 1") == 1
    assert [r["epoch"] for r in read_jsonl(tmp_path / "run/metrics.jsonl")] == [1, 2, 3]


def test_the_feature_cache_is_refused_under_torchrun(tmp_path):
    # a ResNet splits into trunk and head: only torchrun stands in the way
    args = ["run", "--task", "classification", "--model", "tv:resnet18", "--strategy", "freeze"]
    args += ["--cache-features", "on", "--no-augment", "--image-size", "32", "--device", "cpu"]
    result = subprocess.run(
        [*torchrun(), *args, "--batch-size", "4", "--out", "run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "--cache-features on: cannot cache: it is not supported with torchrun" in result.stderr
    assert not (tmp_path / "run").exists()
