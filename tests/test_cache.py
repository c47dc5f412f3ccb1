"""Cached features behind a frozen backbone: the same numbers, less work."""

from __future__ import annotations

import pytest
from conftest import one_line_error, read_jsonl

PROBE = [
    "run",
    "--task",
    "classification",
    "--model",
    "tv:resnet18",
    "--strategy",
    "freeze",
    "--epochs",
    "2",
    "--image-size",
    "32",
    "--num-samples",
    "48",
]


def test_cached_linear_probe_matches_uncached(ftkit, tmp_path):
    cached = ftkit(*PROBE, "--no-augment", "--out", "cached")
    assert cached.returncode == 0, cached.stderr
    assert "cached the frozen backbone's features of 38 samples" in cached.stdout
    plain = ftkit(*PROBE, "--no-augment", "--cache-features", "off", "--out", "plain")
    assert plain.returncode == 0, plain.stderr
    assert "cached" not in plain.stdout
    for a, b in zip(
        read_jsonl(tmp_path / "cached/metrics.jsonl"),
        read_jsonl(tmp_path / "plain/metrics.jsonl"),
        strict=True,
    ):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key


def test_auto_does_not_cache_under_augmentation(ftkit):
    result = ftkit(*PROBE, "--epochs", "1", "--out", "aug")
    assert result.returncode == 0, result.stderr
    assert "cached" not in result.stdout


def test_on_refuses_when_augmentation_would_make_it_wrong(ftkit, tmp_path):
    line = one_line_error(ftkit(*PROBE, "--cache-features", "on", "--out", "refused"))
    assert not (tmp_path / "refused").exists()
    assert line == (
        "ftkit: error: --cache-features on: cannot cache: random augmentation or mixing "
        "makes cached features wrong; use --augment none without --mixup/--cutmix"
    )


def test_on_refuses_when_the_backbone_trains(ftkit):
    line = one_line_error(
        ftkit(*PROBE, "--strategy", "full", "--no-augment", "--cache-features", "on")
    )
    assert "stage 'full' trains part of the backbone" in line


@pytest.mark.parametrize(
    "name", ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"]
)
def test_a_split_torchvision_model_computes_what_its_forward_does(name):
    import torch
    import torchvision.models as tvm

    from ftkit.models.torchvision import split

    torch.manual_seed(0)
    model = getattr(tvm, name)(num_classes=3).eval()
    parts = split(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(parts.head(parts.trunk_forward(x)), model(x), atol=1e-6)
    head = {n for n, _ in model.named_parameters()} - parts.trunk_params
    assert head and all(n.startswith(("fc.", "classifier.")) for n in head)
