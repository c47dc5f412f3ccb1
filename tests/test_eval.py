"""Evaluation users can trust (issue 14, item 4): the expected calibration
error every epoch and in ``ftkit eval``, ``--tta flip``, the per-class table,
the confusion matrix as an image, and ``--calibrate`` (temperature scaling)
stored with the run."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import one_line_error, read_jsonl

from ftkit.commands.calibration import calibrated, ece, fit_temperature, nll
from ftkit.engine.train.loop import evaluate
from ftkit.metrics import ClassificationMetrics
from ftkit.tasks import ftkit_register_tasks

CPU = torch.device("cpu")
PNG = b"\x89PNG\r\n\x1a\n"
CLS = ["--task", "classification", "--model", "tv:mobilenet_v2", "--strategy", "full"]
TINY = ["--epochs", "1", "--image-size", "32", "--num-samples", "64", "--batch-size", "8"]


def tasks() -> dict:
    found: dict = {}
    ftkit_register_tasks(register=lambda task: found.setdefault(task.name, task))
    return found


# Six samples of three classes whose max probabilities fall in known bins of
# width 1/15: (13/15, 14/15] holds 0.9, (14/15, 1] 0.95, (10/15, 11/15] 0.7 and
# 0.72, (7/15, 8/15] 0.5, (6/15, 7/15] 0.45.
PROBS = torch.tensor(
    [
        [0.90, 0.05, 0.05],  # target 0: right, confidence 0.9
        [0.95, 0.03, 0.02],  # target 1: wrong, 0.95
        [0.20, 0.70, 0.10],  # target 1: right, 0.7
        [0.10, 0.72, 0.18],  # target 2: wrong, 0.72 (the same bin as 0.7)
        [0.50, 0.10, 0.40],  # target 0: right, 0.5
        [0.30, 0.25, 0.45],  # target 1: wrong, 0.45
    ],
    dtype=torch.float64,
)
TARGET = torch.tensor([0, 1, 1, 2, 0, 1])
# sum over bins of |right_b - confidence sum_b|, over N:
# |1 - 0.9| + |0 - 0.95| + |1 - (0.7 + 0.72)| + |1 - 0.5| + |0 - 0.45| = 2.42
HAND_ECE = 2.42 / 6


def test_ece_of_known_probabilities_by_hand():
    m = ClassificationMetrics(3)
    m.update(PROBS.log().float(), TARGET)  # softmax(log p) = p
    assert m.compute()["ece"] == pytest.approx(HAND_ECE, abs=1e-6)
    split = ClassificationMetrics(3)  # two batches
    split.update(PROBS[:4].log().float(), TARGET[:4])
    split.update(PROBS[4:].log().float(), TARGET[4:])
    assert split.compute()["ece"] == pytest.approx(HAND_ECE, abs=1e-6)


def test_ece_merges_ranks_by_bins_not_by_averaging():
    # Each rank alone: (0.1 + 0.3 + 0.5) / 3 and (0.95 + 0.72 + 0.45) / 3, averaging 0.5033;
    # samples 2 and 3 share a bin only once the ranks are summed, giving the hand value.
    a, b = ClassificationMetrics(3), ClassificationMetrics(3)
    a.update(PROBS[0::2].log().float(), TARGET[0::2])
    b.update(PROBS[1::2].log().float(), TARGET[1::2])
    assert a.compute()["ece"] == pytest.approx(0.9 / 3, abs=1e-6)
    a.load_state(a.state + b.state)  # what all_reduce(SUM) across two ranks does
    assert a.state.dtype == torch.int64
    assert a.compute()["ece"] == pytest.approx(HAND_ECE, abs=1e-6)
    assert a.compute()["accuracy"] == 3 / 6


def test_ece_needs_logits_for_every_sample():
    ids = ClassificationMetrics(3)
    ids.update(PROBS.argmax(1), TARGET)
    assert math.isnan(ids.compute()["ece"])  # class ids carry no confidence
    mixed = ClassificationMetrics(3)
    mixed.update(PROBS[:3].log().float(), TARGET[:3])
    mixed.update(PROBS[3:].argmax(1), TARGET[3:])
    assert math.isnan(mixed.compute()["ece"])
    assert math.isnan(ClassificationMetrics(3).compute()["ece"])  # no sample at all


def test_ece_matches_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(500, 5, generator=gen)
    target = torch.randint(0, 5, (500,), generator=gen)
    theirs = multiclass_calibration_error(
        logits.softmax(1), target, num_classes=5, n_bins=15, norm="l1"
    )
    assert ece(logits, target) == pytest.approx(float(theirs), abs=1e-6)


def over_confident(n: int = 2000, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed classifier's logits, right on ~70% of the samples, times 20."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, classes, (n,), generator=gen)
    logits = 1.5 * F.one_hot(target, classes) + torch.randn(n, classes, generator=gen)
    assert 0.65 < (logits.argmax(1) == target).float().mean() < 0.75
    return 20 * logits, target


def test_temperature_scaling_lowers_the_ece_of_an_over_confident_model():
    logits, target = over_confident()
    temperature = fit_temperature(logits, target)
    assert temperature > 1
    figures = calibrated(logits, target, temperature)
    assert figures["ece_before"] > 0.2  # ~70% right, ~100% sure
    assert figures["ece_after"] < figures["ece_before"] / 5
    assert figures["nll_after"] < figures["nll_before"]
    # T is the NLL's minimum: 2% either way is worse
    for other in (0.98 * temperature, 1.02 * temperature):
        assert nll(logits / other, target) > figures["nll_after"]
    # it changes no prediction
    assert torch.equal((logits / temperature).argmax(1), logits.argmax(1))


def test_a_calibrated_model_keeps_a_temperature_near_1():
    gen = torch.Generator().manual_seed(1)
    logits = 2 * torch.randn(5000, 4, generator=gen)
    # labels drawn from the model's own probabilities: calibrated by construction
    target = torch.multinomial(logits.softmax(1), 1, generator=gen).squeeze(1)
    assert fit_temperature(logits, target) == pytest.approx(1.0, abs=0.05)


class LeftRight(torch.nn.Module):
    """Logits of three classes from the mean of the left and the right half:
    (3 * left, 2 * right, 1); a flip swaps the halves, so it changes them."""

    def forward(self, x):
        half = x.shape[-1] // 2
        left, right = x[..., :half].mean((1, 2, 3)), x[..., half:].mean((1, 2, 3))
        return torch.stack([3 * left, 2 * right, torch.ones_like(left)], dim=1)


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def mean_of(p: list[float], q: list[float]) -> list[float]:
    return [(a + b) / 2 for a, b in zip(p, q, strict=True)]


def hand_ece(probs: list[list[float]], target: list[int]) -> float:
    bins: dict[int, list[float]] = {}
    for p, t in zip(probs, target, strict=True):
        confidence = max(p)
        b = bins.setdefault(math.ceil(confidence * 15) - 1, [0.0, 0.0])
        b[0] += p.index(confidence) == t
        b[1] += confidence
    return sum(abs(right - conf) for right, conf in bins.values()) / len(probs)


def test_tta_flip_scores_the_mean_softmax_of_a_classifier():
    halves = [(1.0, 0.0), (0.0, 1.0), (0.2, 0.3), (0.5, 0.9)]  # (left, right) intensities
    target = [0, 1, 2, 0]
    x = torch.tensor([[a, a, b, b] for a, b in halves]).view(4, 1, 1, 4)
    loader = [(x[:2], torch.tensor(target[:2])), (x[2:], torch.tensor(target[2:]))]
    task = tasks()["classification"]
    # by hand: the flip swaps left and right; a classifier's output is not flipped back
    views = [(softmax([3 * a, 2 * b, 1]), softmax([3 * b, 2 * a, 1])) for a, b in halves]
    probs = [mean_of(p, q) for p, q in views]
    # the loss is each view's own, averaged (right for any loss function)
    pairs = zip(views, target, strict=True)
    loss = sum(-math.log(p[t]) - math.log(q[t]) for (p, q), t in pairs) / 8
    right = sum(p.index(max(p)) == t for p, t in zip(probs, target, strict=True))
    flip, _ = evaluate(LeftRight(), loader, F.cross_entropy, task, 3, CPU, tta="flip")
    assert flip["val_loss"] == pytest.approx(loss, abs=1e-6)
    assert flip["val_accuracy"] == right / 4
    assert flip["val_ece"] == pytest.approx(hand_ece(probs, target), abs=1e-6)
    plain, _ = evaluate(LeftRight(), loader, F.cross_entropy, task, 3, CPU)
    assert abs(plain["val_loss"] - loss) > 0.05  # the flip changed the figures


def test_tta_flip_refuses_what_is_not_an_image_batch():
    from ftkit.engine.train.loop import predict
    from ftkit.errors import UsageError

    tokens = torch.tensor([[101, 2023, 102, 0]])  # a text task's batch: ids, not pixels
    with pytest.raises(UsageError, match="--tta flip flips images; task 'classification'"):
        predict(lambda x: torch.zeros(1, 2), tokens, tasks()["classification"], "flip")


def test_a_non_finite_logit_makes_the_ece_nan():
    metrics = ClassificationMetrics(2)
    metrics.update(torch.tensor([[2.0, 0.0], [float("nan"), 0.0], [0.0, float("inf")]]),
                   torch.tensor([0, 1, 1]))  # fmt: skip
    assert math.isnan(metrics.compute()["ece"])
    assert metrics.compute()["accuracy"] == pytest.approx(2 / 3)  # the rest is unchanged


class Ramp(torch.nn.Module):
    """Two classes per pixel: (2 * value, the pixel's column). The column does
    not move with a flip, so only an output flipped back averages right."""

    def forward(self, x):
        columns = torch.arange(x.shape[-1], dtype=x.dtype).expand_as(x)
        return torch.cat([2 * x, columns], dim=1)


def test_tta_flip_flips_a_segmentation_output_back():
    row, target = [0.2, 1.0, 2.5, 0.5], [1, 0, 0, 1]
    x, y = torch.tensor(row).view(1, 1, 1, 4), torch.tensor(target).view(1, 1, 4)
    # by hand at column c: the image gives (2 x_c, c), the flipped one flipped back (2 x_c, 3 - c)
    views = [(softmax([2 * v, c]), softmax([2 * v, 3 - c])) for c, v in enumerate(row)]
    probs = [mean_of(p, q) for p, q in views]
    pairs = zip(views, target, strict=True)
    loss = sum(-math.log(p[t]) - math.log(q[t]) for (p, q), t in pairs) / 8
    labels = [p.index(max(p)) for p in probs]
    # right everywhere; without the flip back, column 0 would average (0.4, 0) with
    # (2 * 0.5, 0) and read class 0
    assert labels == target
    task = tasks()["segmentation"]
    flip, _ = evaluate(Ramp(), [(x, y)], F.cross_entropy, task, 2, CPU, tta="flip")
    assert flip["val_loss"] == pytest.approx(loss, abs=1e-6)
    assert flip["val_confusion_matrix"] == [[2, 0], [0, 2]]
    assert flip["val_pixel_accuracy"] == 1.0
    plain, _ = evaluate(Ramp(), [(x, y)], F.cross_entropy, task, 2, CPU)
    assert plain["val_pixel_accuracy"] == 0.75  # column 0 alone, (0.4, 0), reads class 0


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    import os
    import subprocess
    import sys

    where = tmp_path_factory.mktemp("cls")
    done = subprocess.run(
        [sys.executable, "-m", "ftkit", "run", *CLS, *TINY, "--out", "run"],
        cwd=where, capture_output=True, text=True, env=os.environ,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return where / "run"


def test_every_classification_epoch_records_its_ece(cls_run):
    rows = read_jsonl(cls_run / "metrics.jsonl")
    assert rows and all(0 <= row["val_ece"] <= 1 for row in rows)
    summary = json.loads((cls_run / "summary.json").read_text())
    assert summary["best"]["val_ece"] == rows[-1]["val_ece"]


def test_eval_with_tta_flip_draws_the_confusion_matrix(ftkit, cls_run, tmp_path):
    result = ftkit(
        "eval", "--checkpoint", str(cls_run), "--tta", "flip", "--plot", "cm.png", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cm.png").read_bytes()[:8] == PNG
    report = json.loads(result.stdout)
    assert report["tta"] == "flip" and 0 <= report["val_ece"] <= 1
    matrix = report["val_confusion_matrix"]
    assert report["support"] == [sum(row) for row in matrix]  # images per true class
    assert sum(report["support"]) == report["samples"]
    for i, row in enumerate(matrix):
        column = sum(r[i] for r in matrix)
        precision, recall = report["val_precision_per_class"][i], report["val_recall_per_class"][i]
        assert precision == (row[i] / column if column else None)  # JSON's null for nan
        assert recall == (row[i] / sum(row) if sum(row) else None)


def test_calibrate_stores_the_temperature_and_eval_applies_it(ftkit, cls_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cls_run, run)
    result = ftkit("eval", "--checkpoint", str(run), "--calibrate", "--json")
    assert result.returncode == 0, result.stderr
    assert "in-sample" in result.stderr  # fitted and judged on the same split, and said so
    report = json.loads(result.stdout)
    stored = json.loads((run / "calibration.json").read_text())
    assert stored["temperature"] > 0 and stored["temperature"] == report["temperature"]
    assert stored["ece_before"] == report["val_ece"]
    assert stored["ece_after"] == report["ece_calibrated"]
    assert stored["nll_after"] <= stored["nll_before"]
    assert stored["samples"] == report["samples"] and stored["tta"] == "none"
    assert report["calibration_file"] == str(run / "calibration.json")
    assert not list(run.glob(".calibration.json.*"))  # no temporary file left
    again = ftkit("eval", "--checkpoint", str(run))
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert f"{'temperature':>16}  {stored['temperature']:.4f}" in lines
    assert f"{'ece_calibrated':>16}  {stored['ece_after']:.4f}" in lines
    header = next(line for line in lines if line.startswith("class"))
    assert header.split() == ["class", "f1", "precision", "recall", "support"]
    for name in ("circle", "square", "triangle", "star"):
        assert any(line.split()[:1] == [name] for line in lines)


def _evaluate(run, checkpoint, **options):
    from ftkit.commands.evaluate import evaluate_checkpoint
    from ftkit.configure import make_config
    from ftkit.plugins.manager import Plugins

    config = make_config(str(run / "config.toml"), (), (), {})
    return evaluate_checkpoint(str(checkpoint), config, Plugins(config.plugins), **options)


def test_a_stored_temperature_applies_only_to_its_weights_and_tta(cls_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cls_run, run)
    fitted = _evaluate(run, run, calibrate=True)
    assert "temperature" in _evaluate(run, run / "checkpoints" / "best.safetensors")
    flipped = _evaluate(run, run, tta="flip")
    assert "temperature" not in flipped
    assert any("fitted with --tta none" in note for note in flipped["notes"])
    other = _evaluate(run, run / "checkpoints" / "last.pt")
    assert "temperature" not in other
    assert any("other weights" in note for note in other["notes"])
    # a weights file outside any run: the figures, and a note that nothing was stored
    bare = tmp_path / "bare.safetensors"
    shutil.copy(run / "checkpoints" / "best.safetensors", bare)
    alone = _evaluate(run, bare, calibrate=True)
    assert alone["temperature"] == pytest.approx(fitted["temperature"])
    assert "calibration_file" not in alone  # nothing stored, so no file named
    assert any("not stored" in note for note in alone["notes"])


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--tta", "rotate"], "'rotate' is not one of 'none', 'flip'"),
        (["--plot", "cm.txt"], "--plot 'cm.txt': unknown file type '.txt'"),
        (["--task", "segmentation", "--calibrate"], "--calibrate fits a temperature"),
        (["--task", "classification"], "weights file 'w.safetensors' not found"),
    ],
)
def test_eval_refuses_what_it_cannot_do(ftkit, tmp_path, args, expected):
    line = one_line_error(ftkit("eval", "--checkpoint", "w.safetensors", *args))
    assert expected in line
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_plot_without_matplotlib_is_one_line(ftkit, tmp_path):
    (tmp_path / "fake" / "matplotlib").mkdir(parents=True)
    (tmp_path / "fake" / "matplotlib" / "__init__.py").write_text("raise ImportError('none')\n")
    result = ftkit(
        "eval", "--checkpoint", "w.safetensors", "--plot", "cm.png",
        env={"PYTHONPATH": str(tmp_path / "fake")},
    )  # fmt: skip
    assert "--plot needs matplotlib" in one_line_error(result)
    assert not (tmp_path / "cm.png").exists()
