"""A training step never waits for the host: the loss and gradient figures are
read every ``--log-every`` steps, a non-finite step is skipped on the device
(weights and AdamW's state bit for bit unchanged), and under torchrun a rank's
non-finite loss reaches every rank through the gradients' own all-reduce."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest
import torch
from conftest import read_jsonl, torchrun
from test_engine import tiny_loop
from torch.overrides import TorchFunctionMode

import ftkit
from ftkit.engine.train.loop import Loop

# What makes the host wait for the device (on a GPU): a tensor's value read in Python.
READS = {"item", "__float__", "__bool__", "__int__", "__index__", "tolist", "cpu", "numpy"}


class HostReads(TorchFunctionMode):
    """Counts reads of a tensor's value by the host, except while ``paused``."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()
        self.paused = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in READS and not self.paused:
            self.reads[name] += 1
        return func(*args, **(kwargs or {}))


def counted(monkeypatch) -> tuple[HostReads, list[int]]:
    """Count host reads inside ``Loop.train_epoch``, data loading left out; and the
    optimizer steps each epoch made."""
    mode, steps = HostReads(), []
    train_epoch = Loop.train_epoch

    def batches(loader):
        iterator = iter(loader)
        while True:
            mode.paused = True  # the loader's own work is not the step's
            try:
                batch = next(iterator)
            except StopIteration:
                return
            finally:
                mode.paused = False
            yield batch

    def watched(self, loader, *args, **kwargs):
        with mode:
            progress = train_epoch(self, batches(loader), *args, **kwargs)
        steps.append(progress.steps)
        return progress

    monkeypatch.setattr(Loop, "train_epoch", watched)
    return mode, steps


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, extra",
    [
        ("segmentation", {"clip_grad_norm": 1.0, "ema": 0.9, "accumulate": 2}),
        ("classification", {"clip_grad_norm": 1.0, "ema": 0.9, "accumulate": 2, "l2sp": 0.1}),
    ],
)
def test_a_step_reads_nothing_back_but_every_log_every_steps(
    monkeypatch, tmp_path, task, extra, mobilenet_file
):
    options = {"l2sp": extra.pop("l2sp")} if "l2sp" in extra else {}
    model = (
        {"model": "tv:mobilenet_v2", "weights": str(mobilenet_file)}
        if task == "classification"
        else {"model": "smp:unet:resnet18"}
    )
    mode, steps = counted(monkeypatch)
    outcome = ftkit.run(
        task=task, image_size=32, num_samples=220, batch_size=2, epochs=1, strategy="full",
        lr=1e-3, log_every=10, out=str(tmp_path / "run"), options=options, **model, **extra,
    )  # fmt: skip
    assert outcome.stop_reason == "completed"
    assert steps[0] >= 40
    assert mode.reads == {"tolist": steps[0] // 10 + 1}  # the reads, and the epoch's end


class NanGradient(torch.autograd.Function):
    """The identity forward; NaN for every gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, torch.nan)


def test_a_nan_gradient_leaves_weights_and_adamw_state_bit_identical():
    model, loop, stage, data = tiny_loop(None)
    calls = []

    def loss_fn(logits, target):  # a finite loss whose second step's gradient is NaN
        calls.append(1)
        if len(calls) == 2:
            logits = NanGradient.apply(logits)
        return torch.nn.functional.cross_entropy(logits, target)

    def state():
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        moments = {
            (i, k): v.clone()
            for i, p in enumerate(model.parameters())
            for k, v in loop.optimizer.state[p].items()
        }
        return weights, moments

    def same(a, b):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert loop.optimizer.defaults["fused"]  # the kernel that takes found_inf
    first = loop.train_epoch(data[:1], loss_fn, stage, 0, 3)
    before = state()
    assert {k for _, k in before[1]} == {"step", "exp_avg", "exp_avg_sq"}
    skipped = loop.train_epoch(data[1:2], loss_fn, stage, 1, 3)
    after = state()
    assert same(before[0], after[0]) and same(before[1], after[1])  # bit for bit
    assert (first.skipped, skipped.skipped, loop.nonfinite.total) == (0, 1, 1)
    loop.train_epoch(data[2:3], loss_fn, stage, 2, 3)
    trained = state()
    assert not same(after[0], trained[0])  # the next step trains
    assert all(float(trained[1][(i, "step")]) == 2.0 for i in range(2))


def test_the_figures_equal_those_read_every_step(tmp_path):
    """Reads change when the host looks, never what it sees."""
    rows = {}
    for every in (1, 7):
        out = tmp_path / f"every{every}"
        common = dict(image_size=32, num_samples=40, batch_size=4, epochs=2, strategy="full")
        assert ftkit.run(log_every=every, out=str(out), **common).stop_reason == "completed"
        rows[every] = [
            {k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
            for r in read_jsonl(out / "metrics.jsonl")
        ]
    assert rows[1] == rows[7]


# A toy model (no BatchNorm: per-rank statistics would differ from one batch's);
# rank 0's loss is NaN at the third step while its gradients stay finite, so only
# the LossFlag in the all-reduce can tell rank 1. The collectives inside
# Loop.train_epoch are counted per rank.
TOY = """
import json, os, sys
import torch
import torch.distributed as dist
from torch import nn
import ftkit
from ftkit.engine.train.loop import Loop

calls = {"losses": 0, "collectives": 0}
all_reduce = dist.all_reduce


def counting(*args, **kwargs):
    if "ddp_comm_hooks" not in sys._getframe(1).f_code.co_filename:  # DDP's own: not counted
        calls["collectives"] += 1
    return all_reduce(*args, **kwargs)


dist.all_reduce = counting
train_epoch = Loop.train_epoch


def counted(self, *args, **kwargs):
    calls["collectives"] = 0
    progress = train_epoch(self, *args, **kwargs)
    with open(f"collectives-{os.environ.get('RANK', '0')}.jsonl", "a") as f:
        f.write(json.dumps({"steps": progress.steps, "collectives": calls["collectives"]}) + "\\n")
    return progress


Loop.train_epoch = counted


class NanValue(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loss):
        return loss + float("nan")

    @staticmethod
    def backward(ctx, grad):
        return grad


def loss(**kw):
    ce = nn.CrossEntropyLoss(ignore_index=255)

    def fn(logits, target):
        calls["losses"] += 1
        value = ce(logits, target)
        if calls["losses"] == 3 and os.environ.get("RANK", "0") == "0":
            value = NanValue.apply(value)
        return value

    return fn


@ftkit.hookimpl
def ftkit_register_models(register):
    register(ftkit.ModelFamily("toy", lambda rest, *, num_classes, task: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))))


@ftkit.hookimpl
def ftkit_register_losses(register):
    register(ftkit.Loss("nan3", loss))
"""
ARGS = ["run", "--plugin", "toy", "--model", "toy:x", "--strategy", "full", "--epochs", "2"]
ARGS += ["--image-size", "32", "--num-samples", "48", "--lr", "1e-2", "--no-augment"]
ARGS += ["--loss", "nan3", "--log-every", "2"]


@pytest.mark.slow
def test_two_ranks_skip_the_step_one_rank_found_not_finite(ftkit, tmp_path):
    (tmp_path / "toy.py").write_text(TOY)
    single = ftkit(*ARGS, "--batch-size", "8", "--out", "single")
    assert single.returncode == 0, single.stderr
    (tmp_path / "collectives-0.jsonl").unlink()
    ddp = subprocess.run(
        [*torchrun(), *ARGS, "--batch-size", "4", "--out", "ddp", "--device", "cpu"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = read_jsonl(tmp_path / "single/metrics.jsonl")
    two = read_jsonl(tmp_path / "ddp/metrics.jsonl")
    assert [r["skipped_steps"] for r in one] == [r["skipped_steps"] for r in two] == [1, 0]
    # the ranks stayed together (train_loss differs: rank 1's finite loss of that step counts)
    for a, b in zip(one, two, strict=True):
        for key in ("val_loss", "val_miou", "val_pixel_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    for rank in (0, 1):
        lines = (tmp_path / f"collectives-{rank}.jsonl").read_text().splitlines()
        epochs = [json.loads(line) for line in lines]
        # one agreement per read (every 2 steps and the epoch's end), none per step
        assert [e["collectives"] for e in epochs] == [e["steps"] // 2 + 1 for e in epochs]
        assert all(e["steps"] >= 4 for e in epochs)
