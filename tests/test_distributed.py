"""torchrun with 2 processes (gloo, CPU) computes what one process computes
over the same global batches."""

from __future__ import annotations

import subprocess

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


def test_two_gloo_processes_match_one(ftkit, tmp_path):
    (tmp_path / "toy.py").write_text(TOY)
    single = ftkit(*ARGS, "--batch-size", "8", "--out", "single")
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [
            *torchrun(),
            *ARGS,
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
