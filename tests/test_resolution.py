"""Images at their own resolution (issue 23): the aspect ratio kept, segmentation
scored at each original mask's size, and training on square crops of the
ratio-kept images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ftkit.data import load_data
from ftkit.data.transforms import CatMaxRatio, TrainCrop
from ftkit.registry import Registry

# A model whose prediction is a rule on its input: class 1 where the red channel
# is above half, else class 0 (class 2 never). Its one parameter changes nothing.
RAMP = """
import ftkit
import torch
from torch import nn

THRESHOLD = (0.5 - 0.485) / 0.229  # red 0.5 after ImageNet normalisation


class Ramp(nn.Module):
    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        red = x[:, :1]
        logits = torch.cat([torch.full_like(red, THRESHOLD), red, torch.full_like(red, -100.0)], 1)
        return logits + 0 * self.unused


@ftkit.hookimpl
def ftkit_register_models(register):
    register(ftkit.ModelFamily("ramp", lambda rest, *, num_classes, task: Ramp()))
"""
BAND = 4  # columns either side of the middle left unlabelled: resampling moves the edge


def ramp_pair(root: Path, split: str, stem: str, height: int, width: int) -> np.ndarray:
    """An image whose red rises left to right, and its mask: 0 left, 1 right, 255 in a
    band at the middle, and a 1-pixel-wide column of class 2 that the model never
    predicts (squashing would drop or double it). The mask, as written."""
    red = np.round(255 * np.arange(width) / (width - 1)).astype(np.uint8)
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = red
    mask = np.where(np.arange(width) > (width - 1) / 2, 1, 0).astype(np.uint8)
    mask = np.repeat(mask[None], height, axis=0)
    middle = (width - 1) / 2
    mask[:, int(np.floor(middle - BAND)) : int(np.ceil(middle + BAND)) + 1] = 255
    mask[:, 3] = 2
    for folder, array in (("images", image), ("masks", mask)):
        (root / split / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / split / folder / f"{stem}.png")
    return mask


def iou_like_mmseg(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int):
    """MMSegmentation's ``intersect_and_union``, summed over images, in numpy."""
    inter = np.zeros(num_classes)
    area_pred = np.zeros(num_classes)
    area_label = np.zeros(num_classes)
    for pred, label in pairs:
        keep = label != 255
        pred, label = pred[keep], label[keep]
        inter += np.bincount(pred[pred == label], minlength=num_classes)
        area_pred += np.bincount(pred, minlength=num_classes)
        area_label += np.bincount(label, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_pred + area_label - inter), area_label


def test_segmentation_is_scored_at_each_masks_own_size(ftkit, tmp_path):
    (tmp_path / "ramp.py").write_text(RAMP)
    data = tmp_path / "data"
    ramp_pair(data, "train", "t0", 24, 48)
    ramp_pair(data, "train", "t1", 30, 30)
    # three sizes and aspect ratios: landscape 2:1, portrait, square
    masks = [ramp_pair(data, "val", "a", 45, 90), ramp_pair(data, "val", "b", 70, 42)]
    masks.append(ramp_pair(data, "val", "c", 51, 51))
    (data / "classes.txt").write_text("left\nright\nline\n")
    common = ["--plugin", "ramp", "--model", "ramp:x", "--image-size", "16", "--batch-size", "2"]
    common += ["--normalize", "weights"]  # the rule reads ImageNet-normalised red
    run = ftkit(
        "run", *common, "--data", str(data), "--strategy", "full", "--epochs", "1",
        "--no-augment", "--out", "run",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = ftkit("eval", "--checkpoint", "run", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["samples"] == 3

    # The rule's prediction at each mask's own size; the band hides where resampling
    # moves the edge between the classes.
    expected = []
    for mask in masks:
        width = mask.shape[1]
        pred = np.repeat((np.arange(width) > (width - 1) / 2)[None], mask.shape[0], axis=0)
        expected.append((pred.astype(np.int64), mask.astype(np.int64)))
    iou, support = iou_like_mmseg(expected, 3)
    exact = [int(sum(((m == c).sum()) for m in masks)) for c in range(3)]
    assert support.astype(int).tolist() == exact
    assert report["support"] == exact  # every pixel of the originals, 255 out
    assert exact[2] == 45 + 70 + 51  # the 1-pixel column, once per row
    assert report["val_iou_per_class"] == pytest.approx(iou.tolist())
    assert report["val_iou_per_class"][2] == 0.0
    assert report["val_miou"] == pytest.approx(float(np.nanmean(iou)))

    # Squashed to 16x16 squares the thin class is counted at another size entirely.
    squash = ftkit("eval", "--checkpoint", "run", "--resize", "squash", "--json")
    assert squash.returncode == 0, squash.stderr
    assert json.loads(squash.stdout)["support"][2] != exact[2]


def stripes(root: Path, stem: str, height: int, width: int, seed: int) -> None:
    """Blocks of black and white whose mask is 1 exactly where the image is white."""
    rng = np.random.default_rng(seed)
    blocks = rng.random((height // 8, width // 8)) > 0.5
    white = np.kron(blocks, np.ones((8, 8), bool))
    for folder, array in (
        ("images", np.repeat(white[..., None] * 255, 3, axis=2).astype(np.uint8)),
        ("masks", white.astype(np.uint8)),
    ):
        (root / "images").mkdir(exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(array).save(root / folder / f"{stem}.png")


def striped(root: Path, n: int, **options):
    """``n`` 2:1 striped images and masks, opened at --image-size 32, pixels as stored."""
    for i in range(n):
        stripes(root, f"{i}", 64, 128, seed=i)
    return load_data(
        str(root),
        "segmentation",
        Registry("dataset"),
        image_size=32,
        augment="none",
        mean=(0, 0, 0),
        std=(1, 1, 1),
        **options,
    )


def test_training_takes_square_crops_of_the_ratio_kept_image(tmp_path):
    data = striped(tmp_path, 6)
    assert not data.train_is_deterministic  # a random crop of a 2:1 image
    seen = set()
    for _ in range(8):
        image, mask = data.train[0]
        assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
        # the image was halved (64 -> 32 rows), so its 8-pixel blocks are 4 wide:
        # where the image is clearly black or white, the mask says the same
        clear = (image[0] < 0.1) | (image[0] > 0.9)
        assert clear.float().mean() > 0.5
        assert torch.equal(mask[clear], (image[0][clear] > 0.5).long())
        seen.add(image.sum().item())
    assert len(seen) > 1  # not always the same square
    image, mask = data.val[0]  # scored whole: the image at 32 x 64, the mask as it is
    assert image.shape == (3, 32, 64) and mask.shape == (64, 128)


def grey_folder(root: Path, levels: dict[str, list[int]]) -> Path:
    """``train/`` and ``val/`` of two classes, each image one grey level (16-bit)."""
    for split, values in levels.items():
        for i, value in enumerate(values):
            folder = root / split / ("a" if i % 2 else "b")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), value, np.uint16)).save(folder / f"{i}.png")
    return root


def test_normalize_dataset_is_measured_on_training_images_and_reused(tmp_path):
    from ftkit.configure import make_config
    from ftkit.plugins.manager import Plugins
    from ftkit.prepare import prepare

    # training images at 1000 and 3000 of 65535; validation ones far brighter
    data = grey_folder(tmp_path / "data", {"train": [1000, 3000] * 4, "val": [60000] * 4})
    values = {
        "task": "classification", "model": "tv:mobilenet_v2", "data": str(data),
        "image_size": 8, "normalize": "dataset", "batch_size": 4,
    }  # fmt: skip
    prepared = prepare(make_config(None, (), (), values), Plugins(()))
    mean, std = 2000 / 65535, 1000 / 65535  # the training split's, by hand
    assert prepared.preprocessing.mean == pytest.approx((mean,) * 3, rel=1e-5)
    assert prepared.preprocessing.std == pytest.approx((std,) * 3, rel=1e-5)
    recorded = prepared.config
    assert recorded.mean == ",".join([f"{mean:.6g}"] * 3)

    # Later commands on the run, on another folder: the recorded figures, unchanged.
    other = grey_folder(tmp_path / "other", {"train": [40000] * 4, "val": [50000] * 4})
    again = prepare(
        make_config(None, (), (), {**values, "data": str(other), "mean": recorded.mean,
                                   "std": recorded.std}),
        Plugins(()),
        load_weights=False,
    )  # fmt: skip
    assert again.preprocessing.mean == prepared.preprocessing.mean
    assert again.preprocessing.std == prepared.preprocessing.std
    # and auto without pretrained weights means the data set's own
    auto = prepare(make_config(None, (), (), {**values, "normalize": "auto"}), Plugins(()))
    assert auto.preprocessing.mean == prepared.preprocessing.mean
    assert "no pretrained weights" in auto.preprocessing.source


def test_images_far_from_the_weights_statistics_get_a_plan_warning(tmp_path, mobilenet_file):
    from ftkit.configure import make_config
    from ftkit.plugins.manager import Plugins
    from ftkit.prepare import prepare

    data = grey_folder(tmp_path / "data", {"train": [1000, 3000] * 4, "val": [2000] * 4})
    values = {
        "task": "classification", "model": "tv:mobilenet_v2", "data": str(data),
        "image_size": 8, "weights": str(mobilenet_file), "batch_size": 4,
    }  # fmt: skip
    prepared = prepare(make_config(None, (), (), values), Plugins(()))
    assert prepared.config.normalize == "weights"
    (warning,) = [w for w in prepared.plan.warnings if "--normalize dataset" in w]
    assert "mean (0.0305, 0.0305, 0.0305)" in warning


def test_a_run_recorded_before_geometry_options_keeps_its_squash_and_statistics(tmp_path):
    from ftkit.config import load_file

    (tmp_path / "plan.json").write_text("{}")
    (tmp_path / "config.toml").write_text('data = "builtin:shapes"\n')
    old = load_file(str(tmp_path / "config.toml"))
    assert (old["resize"], old["normalize"]) == ("squash", "weights")
    (tmp_path / "config.toml").write_text('resize = "keep"\nnormalize = "dataset"\n')
    assert load_file(str(tmp_path / "config.toml"))["resize"] == "keep"
    (tmp_path / "plan.json").unlink()  # a user's own --config file: today's defaults
    (tmp_path / "config.toml").write_text('data = "builtin:shapes"\n')
    assert "resize" not in load_file(str(tmp_path / "config.toml"))


def test_data_ftkit_cannot_measure_falls_back_to_the_weights_statistics_under_auto():
    from ftkit.config import Config
    from ftkit.data import DataSplits
    from ftkit.errors import UsageError
    from ftkit.models.family import Preprocessing
    from ftkit.prepare import normalization

    items = [(torch.zeros(3, 4, 4), torch.tensor(0))] * 2  # a plugin's own dataset
    data = DataSplits("classification", items, items, 2, ["a", "b"])
    config, pre, notes = normalization(Config(task="classification"), Preprocessing(), data)
    assert config.normalize == "weights" and pre.mean == Preprocessing().mean and not notes
    assert "cannot be measured" in pre.source
    with pytest.raises(UsageError, match="--normalize dataset: ftkit cannot read"):
        normalization(Config(task="classification", normalize="dataset"), Preprocessing(), data)


def test_a_crop_trains_on_rescaled_images_padded_where_smaller(tmp_path):
    data = striped(tmp_path, 4, crop=TrainCrop((40, 48)))
    assert not data.train_is_deterministic
    padded = scales = 0
    torch.manual_seed(0)
    for _ in range(40):
        image, mask = data.train[0]
        assert image.shape == (3, 40, 48) and mask.shape == (40, 48)
        pad = mask == 255
        # the pad: ignored in the mask, the mean (0 here) in the image
        assert torch.all(image[:, pad] == 0)
        padded += bool(pad.any())
        # Away from the blocks' edges (2 px: resampled masks take the nearest pixel by
        # torchvision's and OpenCV's rule, which the bilinear image does not share)
        # the mask says what the image shows.
        red = image[:1][None]
        high = torch.nn.functional.max_pool2d(red, 5, 1, 2)[0, 0]
        low = -torch.nn.functional.max_pool2d(-red, 5, 1, 2)[0, 0]
        clear = ~pad & ((high < 0.1) | (low > 0.9))
        assert torch.equal(mask[clear], (image[0][clear] > 0.5).long())
        # the blocks' width tells the scale: 8 px at 64 rows, so 8 * shorter / 64
        scales += bool((~pad).all())
    # shorter sides of 16-64 px: some crops need padding (under 40 rows), some do not
    assert 0 < padded < 40 and scales > 0


class Position(torch.nn.Module):
    """Logits that say where in its input a pixel is: channel 0 the row within the
    input, channel 1 the column, channel 2 the input's mean (its window's identity)."""

    def forward(self, x):
        n, _, h, w = x.shape
        rows = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(n, 1, h, w)
        cols = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(n, 1, h, w)
        mean = x.mean(dim=(1, 2, 3), keepdim=True).expand(n, 1, h, w)
        return torch.cat([rows, cols, mean], dim=1)


def test_slide_averages_exactly_the_windows_that_cover_each_pixel():
    from ftkit.engine.train.sliding import SlidingWindow

    model = Position()
    small = torch.rand(1, 3, 8, 6)
    assert torch.equal(SlidingWindow(model, (8, 8))(small), model(small))  # one window
    x = torch.rand(2, 3, 10, 16)
    out = SlidingWindow(model, (8, 8))(x)  # stride ceil(16 / 3) = 6
    # the windows by hand: rows [0, 8) and [2, 10); columns [0, 8), [6, 14), [8, 16)
    windows = [(r, c) for r in ((0, 8), (2, 10)) for c in ((0, 8), (6, 14), (8, 16))]
    for i in range(10):
        for j in range(16):
            covering = [(r, c) for r, c in windows if r[0] <= i < r[1] and c[0] <= j < c[1]]
            rows = [i - r[0] for r, _ in covering]
            cols = [j - c[0] for _, c in covering]
            means = [x[:, :, r[0] : r[1], c[0] : c[1]].mean(dim=(1, 2, 3)) for r, c in covering]
            assert out[0, 0, i, j] == pytest.approx(sum(rows) / len(rows))
            assert out[0, 1, i, j] == pytest.approx(sum(cols) / len(cols))
            assert out[:, 2, i, j] == pytest.approx(torch.stack(means).mean(0), rel=1e-5)


def test_slide_needs_a_crop_and_a_crop_needs_a_folder(ftkit, tmp_path):
    from conftest import one_line_error

    slide = ftkit("plan", "--eval-mode", "slide")
    assert "--eval-mode slide slides windows of the --crop size" in one_line_error(slide)
    crop = ftkit("plan", "--crop", "32")
    assert "--crop crops a data folder's images" in one_line_error(crop)
    bad = ftkit("plan", "--crop", "0,3")
    assert "--crop" in one_line_error(bad)
    ratio = ftkit("plan", "--cat-max-ratio", "0.75")
    assert "--cat-max-ratio picks among random crops; give --crop" in one_line_error(ratio)


def test_cat_max_ratio_takes_the_first_crop_no_class_dominates():
    masks = iter(
        [
            torch.tensor([[1, 1], [1, 255]]),  # one class only
            torch.tensor([[1, 1], [1, 0]]),  # 75% class 1: not under 0.75
            torch.tensor([[1, 1], [0, 0]]),  # 50%: taken
            torch.tensor([[0, 0], [0, 0]]),
        ]
    )
    pick = CatMaxRatio(lambda image, mask: (image, next(masks)), 0.75)
    assert pick(None, None)[1].tolist() == [[1, 1], [0, 0]]
    always = CatMaxRatio(lambda image, mask: (image, torch.zeros(2, 2)), 0.75, tries=3)
    assert always(None, None)[1].tolist() == [[0, 0], [0, 0]]  # the last one drawn


def test_a_classifier_is_scored_on_the_centre_its_weights_were_trained_with(
    tmp_path, mobilenet_file
):
    from ftkit.configure import make_config
    from ftkit.plugins.manager import Plugins
    from ftkit.prepare import model_data, prepare

    framed = np.full((16, 16, 3), 255, np.uint8)
    framed[4:12, 4:12] = 0  # a black centre in a white frame
    for name in ("a", "b"):
        for i in range(3):
            (tmp_path / name).mkdir(exist_ok=True)
            Image.fromarray(framed).save(tmp_path / name / f"{i}.png")
    values = {
        "task": "classification", "model": "tv:mobilenet_v2", "data": str(tmp_path),
        "image_size": 8, "normalize": "none", "batch_size": 2,
    }  # fmt: skip
    plugins = Plugins(())
    plain = prepare(make_config(None, (), (), values), plugins, load_weights=False)
    assert plain.config.crop_pct == 1.0  # no pretrained weights: the whole image
    image, _ = model_data(plain).val[0]
    assert image.min() == 0 and image.max() == 1  # frame and centre, at 8 px
    pretrained = {**values, "weights": str(mobilenet_file)}
    weighted = prepare(make_config(None, (), (), pretrained), plugins, load_weights=False)
    # a weights file counts as the DEFAULT weights': torchvision resizes to 232, crops 224
    assert weighted.config.crop_pct == 224 / 232
    half = prepare(make_config(None, (), (), {**values, "crop_pct": 0.5}), plugins)
    image, _ = model_data(half).val[0]  # 16 px on the shorter side, its centre 8 x 8
    assert image.shape == (3, 8, 8) and image.max() == 0
