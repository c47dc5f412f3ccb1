"""--augment, --mixup and --cutmix (issue 14): image and mask move together,
mixed batches carry matching soft targets and loss, bad specs are one line."""

from __future__ import annotations

import math
import tomllib

import pytest
import torch
import torch.nn.functional as F
from conftest import one_line_error, read_jsonl
from torchvision import tv_tensors
from torchvision.transforms import v2

from ftkit.config import Config, build_config, load_file
from ftkit.data.augment import KINDS, PRESETS, canonical
from ftkit.data.shapes import shapes_splits
from ftkit.data.transforms import MixCollate, SampleDataset
from ftkit.errors import UsageError
from ftkit.losses import cross_entropy

TINY = ["--image-size", "32", "--num-samples", "16", "--batch-size", "4", "--epochs", "1"]
JOINT = [name for name, kind in KINDS.items() if kind.joint]  # every transform segmentation takes
ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # no normalisation: pixels stay readable


class Regions:
    """Large flat regions whose colour is their class: the dominant channel
    (red 0, green 1, blue 2). The mask is a function of the pixels, and no
    pixel is grey, the colour of the black fill after any jitter."""

    size = 48

    def __len__(self) -> int:
        return 3

    def target(self, index: int) -> torch.Tensor:
        n, third = self.size, self.size // 3
        mask = torch.zeros(n, n, dtype=torch.int64)
        mask[: n // 2, third + 4 * index :] = 1  # asymmetric: a flip that misses shows
        mask[n // 2 :, : 2 * third - 4 * index] = 2
        return mask

    def image(self, index: int) -> torch.Tensor:
        image = torch.full((3, self.size, self.size), 30, dtype=torch.uint8)
        return image.scatter(0, self.target(index)[None], 200)


def check_aligned(image: torch.Tensor, mask: torch.Tensor) -> int:
    """Away from label edges (where the image is interpolated, the mask not),
    a labelled pixel has its label's colour and an ignored one is fill-grey.
    Returns the number of ignored (new border) pixels."""
    m = mask.float()[None, None]
    interior = (F.max_pool2d(m, 5, 1, 2) == -F.max_pool2d(-m, 5, 1, 2))[0, 0]
    pixels = image * 255
    grey = (pixels.max(0).values - pixels.min(0).values) < 3
    labelled = interior & (mask != 255)
    assert torch.equal(pixels.argmax(0)[labelled], mask[labelled])
    assert not grey[labelled].any()
    assert grey[interior & (mask == 255)].all()
    return int((mask == 255).sum())


def test_the_check_catches_a_mask_left_behind():
    image, mask = SampleDataset(Regions(), "segmentation", mean=ZERO, std=ONE)[0]
    check_aligned(image, mask)
    with pytest.raises(AssertionError):
        check_aligned(image.flip(-1), mask)


@pytest.mark.parametrize("spec", [*JOINT, *PRESETS])
def test_segmentation_transforms_keep_image_and_mask_aligned(spec):
    data = SampleDataset(Regions(), "segmentation", augment=spec, mean=ZERO, std=ONE)
    plain = SampleDataset(Regions(), "segmentation", mean=ZERO, std=ONE)
    torch.manual_seed(0)
    changed, border = 0, 0
    for draw in range(24):
        image, mask = data[draw % 3]
        border += check_aligned(image, mask)
        changed += not torch.equal(image, plain[draw % 3][0])
    assert changed == 0 if spec == "none" else changed > 0
    # new border pixels: the mask says 255 where the image got the fill
    assert border > 0 if spec in ("rotate", "strong") else border == 0


@pytest.mark.parametrize("name", [n for n, kind in KINDS.items() if not kind.joint])
def test_transforms_that_cannot_move_a_mask_are_refused_for_segmentation(name):
    # v2's auto-augment policies refuse masks; a mask they skipped would misalign.
    policy = {"randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide}[name]
    with pytest.raises(TypeError):
        policy()(tv_tensors.Image(Regions().image(0)), tv_tensors.Mask(Regions().target(0)))
    with pytest.raises(UsageError, match=f"--augment {name} is for classification only"):
        SampleDataset(Regions(), "segmentation", augment=name)
    image, label = SampleDataset(Regions(), "classification", augment=name)[0]
    assert image.shape == (3, 48, 48)


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_validation_is_never_augmented_and_none_is_cacheable(task):
    raw = shapes_splits(task=task, image_size=32, num_samples=12, seed=0)
    data = raw.with_transforms(augment="strong", mean=ZERO, std=ONE)
    torch.manual_seed(0)
    for i in range(len(data.val)):
        (x1, y1), (x2, y2) = data.val[i], data.val[i]
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert any(not torch.equal(data.train[0][0], data.train[0][0]) for _ in range(5))
    assert not data.train_is_deterministic
    assert raw.with_transforms(augment="none", mean=ZERO, std=ONE).train_is_deterministic


def labelled_batch(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(6, 3, 16, 16, generator=gen) + 1  # no pixel equals another
    return list(zip(images, torch.tensor([0, 1, 2, 3, 0, 2]), strict=True))


def mixed(collate: MixCollate, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch = labelled_batch()
    torch.manual_seed(seed)
    x, y = collate(batch)
    return torch.stack([b[0] for b in batch]), x, y


def expected_targets(lam: torch.Tensor) -> torch.Tensor:
    one_hot = F.one_hot(torch.tensor([0, 1, 2, 3, 0, 2]), 4).float()
    return lam[:, None] * one_hot + (1 - lam[:, None]) * one_hot.roll(1, 0)


def test_mixup_targets_weigh_labels_as_the_images_are_blended():
    x0, x, y = mixed(MixCollate(4, mixup=0.4, cutmix=None), seed=3)
    other = x0.roll(1, 0)
    gap = (x0 - other).flatten(1)
    lam = ((x - other).flatten(1) * gap).sum(1) / (gap * gap).sum(1)  # the images' own weight
    assert torch.allclose(x, lam[:, None, None, None] * x0 + (1 - lam[:, None, None, None]) * other)
    assert 0 < float(lam[0]) < 1
    assert torch.allclose(y.sum(1), torch.ones(6))
    assert torch.allclose(y, expected_targets(lam), atol=1e-5)


def test_cutmix_targets_weigh_labels_by_the_pasted_area():
    collate = MixCollate(4, mixup=None, cutmix=1.0)
    for seed in range(20):
        x0, x, y = mixed(collate, seed)
        own = (x == x0).all(1).flatten(1).float().mean(1)  # share of the image kept
        if 0 < float(own[0]) < 1:
            break
    assert ((x == x0) | (x == x0.roll(1, 0))).all()  # a pasted box, nothing blended
    assert torch.allclose(y.sum(1), torch.ones(6))
    assert torch.allclose(y, expected_targets(own), atol=1e-5)


def test_mixup_and_cutmix_together_pick_one_per_batch():
    kinds = set()
    for seed in range(20):
        x0, x, _ = mixed(MixCollate(4, mixup=0.4, cutmix=1.0), seed)
        kinds.add("cutmix" if ((x == x0) | (x == x0.roll(1, 0))).all() else "mixup")
    assert kinds == {"mixup", "cutmix"}


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_takes_mixed_targets_with_label_smoothing(smoothing):
    _, _, y = mixed(MixCollate(4, mixup=0.4, cutmix=1.0), seed=1)
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    loss = cross_entropy(task="classification", num_classes=4, label_smoothing=smoothing)
    target = y * (1 - smoothing) + smoothing / 4
    by_hand = -(target * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(loss(logits, y), by_hand)


def test_mixing_makes_training_batches_random_and_is_refused_for_masks():
    raw = shapes_splits(task="classification", image_size=32, num_samples=12, seed=0)
    data = raw.with_transforms(augment="none", mean=ZERO, std=ONE, mixup=0.2)
    assert data.collate is not None and not data.train_is_deterministic
    _, y = data.collate([data.train[i] for i in range(4)])
    assert y.shape == (4, data.num_classes)
    seg = shapes_splits(task="segmentation", image_size=32, num_samples=12, seed=0)
    with pytest.raises(UsageError, match="--cutmix mixes class labels: classification only"):
        seg.with_transforms(augment="none", mean=ZERO, std=ONE, cutmix=1.0)


def test_config_records_the_expanded_pipeline_and_reads_it_back(tmp_path):
    config = build_config({}, {"augment": "strong", "mixup": 0.2}, {}, ())
    assert config.augment == canonical(PRESETS["strong"]) and "rotate(degrees=15)" in config.augment
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml())
    saved = build_config(load_file(str(path)), {}, {}, ())
    again = build_config(load_file(str(path)), {"augment": "strong"}, {}, ())  # --resume ... same
    assert saved.augment == again.augment == config.augment and saved.mixup == 0.2
    # the former boolean: true/false in files and --no-augment mean flip/none
    assert build_config({"augment": True}, {}, {}, ()).augment == Config().augment == "hflip(p=0.5)"
    assert build_config({"augment": False}, {}, {}, ()).augment == "none"


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        (
            "crop(0.5),flp",
            ["unknown transform 'flp'", "did you mean 'flip'", "known: crop, hflip, vflip"],
        ),
        ("rotate(deg=10)", ["no argument 'deg'", "did you mean 'degrees'", "it takes degrees"]),
        ("randaugment(num_ops=2,magnitude=40)", ["magnitude must be in [0, 30], got 40"]),
    ],
)
def test_bad_augment_specs_are_one_line_before_any_work(ftkit, tmp_path, spec, fragments):
    line = one_line_error(ftkit("run", *TINY, "--augment", spec, "--out", "r"))
    assert "--augment: " in line
    assert all(fragment in line for fragment in fragments), line
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--augment", "trivialaugment"], "--augment trivialaugment is for classification only"),
        (["--mixup", "0.2"], "--mixup mixes class labels: classification only"),
        (
            ["--task", "classification", "--cutmix", "1", "--loss", "focal"],
            "loss 'focal' takes class indices only",
        ),
    ],
)
def test_mixing_and_policies_are_refused_where_they_cannot_work(ftkit, tmp_path, args, fragment):
    line = one_line_error(ftkit("run", *TINY, *args, "--out", "r"))
    assert fragment in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--task", "classification", "--augment", "strong", "--mixup", "0.2", "--cutmix", "1"],
        ["--task", "segmentation", "--augment", "strong"],
    ],
)
def test_a_tiny_augmented_run_completes(ftkit, tmp_path, args):
    result = ftkit(
        "run", *TINY, "--strategy", "full", *args, "--label-smoothing", "0.1", "--out", "r"
    )
    assert result.returncode == 0, result.stderr
    saved = tomllib.loads((tmp_path / "r" / "config.toml").read_text())
    assert saved["augment"] == canonical("strong")  # the preset, expanded
    assert math.isfinite(read_jsonl(tmp_path / "r" / "metrics.jsonl")[-1]["train_loss"])
    # --resume takes the run's own config, and the preset given again is no change
    (tmp_path / "r" / "summary.json").unlink()
    resumed = ftkit("run", "--resume", "r", "--augment", "strong")
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "r" / "summary.json").is_file()
