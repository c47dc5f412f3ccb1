"""``ftkit advise`` (issue 14): seed 001's guide as a table, the linear probe
that measures the domain, and the commands it prints."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
from conftest import one_line_error

from ftkit.advise import GUIDE, NEAR, SCRATCH, advise, alternative, size_of, strategy_words
from ftkit.commands.probe import ProbeScores, balanced_accuracy, fit_probe, image_label

TINY = ["--task", "classification", "--image-size", "32", "--num-samples", "48", "--device", "cpu"]


@pytest.mark.parametrize(
    ("images", "size"), [(1, "small"), (999, "small"), (1000, "medium"), (4999, "medium"),
                         (5000, "large")],
)  # fmt: skip
def test_the_guide_sizes_data_as_seed_001_does(images, size):
    assert size_of(images) == size


def test_each_cell_of_the_guide_gives_its_strategy():
    assert advise(300, NEAR).strategy == "freeze" and advise(300, NEAR).augment is None
    assert advise(300, NEAR - 0.01) == GUIDE["small", "far"]
    assert GUIDE["small", "far"].augment == "strong"
    assert advise(2000, 0.9) == GUIDE["medium", "near"]  # unfreeze the last stage only
    assert GUIDE["medium", "near"].options == ("multipliers=0,0,1,10",)
    assert advise(2000, 0.1).strategy == "gradual"
    assert advise(6000, 0.9).strategy == "discriminative" and advise(6000, 0.9).lr == 1e-3
    assert advise(6000, 0.1) == GUIDE["large", "far"]
    assert advise(6000, None) == SCRATCH  # no pretrained weights: nothing to transfer
    # near the border the other cell is named; far from it, none
    assert alternative(300, NEAR + 0.05) == GUIDE["small", "far"]
    assert alternative(300, NEAR - 0.05) == GUIDE["small", "near"]
    assert alternative(300, NEAR + 0.2) is None and alternative(300, None) is None
    assert strategy_words(GUIDE["medium", "near"]) == [
        "--strategy", "discriminative", "--lr", "1e-4", "--epochs", "10",
        "-o", "multipliers=0,0,1,10",
    ]  # fmt: skip


def test_error_removed_is_measured_against_random_features_or_chance():
    # random features at 0.6: the pretrained 0.8 removes half of their 0.4 error
    assert ProbeScores(0.8, 0.6, 0.5, 10, 10).error_removed == pytest.approx(0.5)
    # random features below chance: chance is the baseline
    assert ProbeScores(0.75, 0.4, 0.5, 10, 10).error_removed == pytest.approx(0.5)
    assert ProbeScores(0.5, 0.6, 0.5, 10, 10).error_removed == pytest.approx(-0.25)


def test_balanced_accuracy_is_the_mean_recall_over_classes_present():
    truth = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 0, 0, 1, 1, 0, 2, 2])
    # recalls: 3/4, 1/2, 2/2
    assert balanced_accuracy(predicted, truth) == pytest.approx((0.75 + 0.5 + 1.0) / 3)


def test_a_mask_is_labelled_by_its_largest_class_besides_the_common_one():
    mask = torch.tensor([[0, 0, 0, 2], [0, 3, 3, 255], [0, 3, 255, 255]])
    assert image_label(mask, common=0, ignore_index=255) == 3
    assert image_label(torch.zeros(2, 2, dtype=torch.long), 0, 255) == 0  # only background
    assert image_label(torch.tensor(4), 0, 255) == 4  # a class label is itself


def test_the_probe_finds_separable_features_and_not_noise():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 4
    signal = torch.nn.functional.one_hot(y, 4).float() * 5 + torch.randn(400, 4, generator=g)
    x = torch.cat([signal, torch.randn(400, 60, generator=g)], dim=1)
    separable = fit_probe((x[:200], y[:200]), (x[200:], y[200:]), 4)
    noise = torch.randn(400, 64, generator=g)
    random = fit_probe((noise[:200], y[:200]), (noise[200:], y[200:]), 4)
    assert separable > 0.95
    assert abs(random - 0.25) < 0.12


def test_advise_measures_explains_and_prints_commands_that_work(ftkit, mobilenet_file):
    args = ["advise", *TINY, "--model", "tv:mobilenet_v2", "--weights", str(mobilenet_file)]
    result = ftkit(*args, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["size"] == "small" and report["train_images"] < 48
    probe = report["probe"]
    assert 0 <= probe["random"] <= 1 and 0 <= probe["pretrained"] <= 1
    assert probe["chance"] == pytest.approx(1 / len(report["class_names"]))
    baseline = max(probe["random"], probe["chance"])
    assert probe["error_removed"] == pytest.approx(
        (probe["pretrained"] - baseline) / (1 - baseline)
    )
    assert report["domain"] == ("near" if probe["error_removed"] >= NEAR else "far")
    expected = GUIDE["small", report["domain"]]
    assert report["advice"]["strategy"] == expected.strategy
    run = shlex.split(report["commands"]["run"])
    words = strategy_words(expected)
    assert run[:2] == ["ftkit", "run"] and run[-len(words) :] == words
    given = dict(zip(args[1::2], args[2::2], strict=True))  # every option given, kept
    assert dict(zip(run[2 : -len(words) : 2], run[3 : -len(words) : 2], strict=True)) == given
    plan = ftkit(*shlex.split(report["commands"]["plan"])[1:], "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["strategy"] == expected.strategy

    text = ftkit(*args).stdout.splitlines()
    assert text[0].startswith("data: ") and "training images per class: " in text[0]
    assert text[1] == "size: small (under 1,000 training images)"
    assert text[2].startswith(f"domain: {report['domain']}: a linear probe on the frozen")
    assert text[3] == "advice: " + " ".join(strategy_words(expected))


def test_without_weights_the_advice_is_to_train_from_scratch(ftkit):
    result = ftkit("advise", *TINY, "--model", "tv:resnet18", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["probe"] is None and report["domain"] == "none"
    assert report["advice"]["strategy"] == "full" and report["advice"]["cell"] == SCRATCH.cell


def test_advise_refuses_a_model_it_cannot_take_features_from(ftkit, tmp_path):
    import torchvision

    weights = tmp_path / "squeezenet.pth"  # a "pretrained" file of an architecture ftkit
    torch.save(
        torchvision.models.squeezenet1_1(num_classes=3).state_dict(), weights
    )  # cannot split
    result = ftkit("advise", *TINY, "--model", "tv:squeezenet1_1", "--weights", str(weights))
    assert one_line_error(result) == (
        "ftkit: error: advise cannot take features from tv:squeezenet1_1: ftkit does not know "
        "how to split SqueezeNet into trunk and head"
    )
