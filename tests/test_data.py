"""Datasets: the built-in shapes set, folder layouts, transforms, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ftkit.data.builtin
from ftkit.data import DataSplits, load_data
from ftkit.data.builtin import Dataset
from ftkit.data.shapes import shapes_splits, write_shapes
from ftkit.errors import UsageError
from ftkit.registry import Registry

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture
def registry() -> Registry:
    reg: Registry = Registry("dataset")
    ftkit.data.builtin.ftkit_register_datasets(register=lambda d: reg.add(d.name, d, "test"))
    return reg


def items(dataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [dataset[i] for i in range(len(dataset))]


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rgb(h: int = 8, w: int = 8, value: int = 100) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def pair(root: Path, stem: str, mask: np.ndarray, image: np.ndarray | None = None) -> None:
    h, w = mask.shape
    save(root / "images" / f"{stem}.png", rgb(h, w) if image is None else image)
    save(root / "masks" / f"{stem}.png", mask.astype(np.uint8))


def error(**kwargs) -> str:
    """The message ``load_data`` raises for a folder."""
    kwargs.setdefault("task", "segmentation")
    with pytest.raises(UsageError) as info:
        load_data(str(kwargs.pop("spec")), kwargs.pop("task"), Registry("dataset"), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- built-in shapes ------------------------------------------------------------------


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_shapes_are_deterministic_by_seed(task):
    a, b, c = (shapes_splits(task=task, image_size=32, num_samples=20, seed=s) for s in (1, 1, 2))
    for split in ("train", "val"):
        for (xa, ya), (xb, yb) in zip(
            items(getattr(a, split)), items(getattr(b, split)), strict=True
        ):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a.train[0][0], c.train[0][0])


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_items_follow_the_contract(registry, task):
    data = load_data("builtin:shapes", task, registry, image_size=32, num_samples=10)
    image, target = data.train[0]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert type(image) is torch.Tensor and type(target) is torch.Tensor
    assert target.dtype == torch.int64
    assert target.shape == ((32, 32) if task == "segmentation" else ())
    assert len(data.train) == 8 and len(data.val) == 2
    assert data.num_classes == len(data.class_names) == (5 if task == "segmentation" else 4)
    assert not data.train_is_deterministic
    assert load_data(
        "builtin:shapes", task, registry, image_size=32, num_samples=10, augment=False
    ).train_is_deterministic


def test_val_is_normalised_and_never_augmented(registry):
    data = load_data("builtin:shapes", "segmentation", registry, image_size=32, num_samples=10)
    raw = data.val.source.image(0).float() / 255  # type: ignore[attr-defined]
    expected = (raw - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    for _ in range(5):
        assert torch.allclose(data.val[0][0], expected, atol=1e-6)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_segmentation_star_is_rare(size):
    data = shapes_splits(task="segmentation", image_size=size, num_samples=256, seed=0)
    per_mask = torch.stack(
        [torch.bincount(m.flatten(), minlength=5) for m in targets(data.train) + targets(data.val)]
    )
    with_class = (per_mask > 0).float().mean(0)
    assert 0 < with_class[4] <= 0.10
    assert all(share > 0.3 for share in with_class[1:4])  # the other shapes are common
    assert 0 < per_mask[:, 4].sum() / per_mask.sum() < 0.02
    counts = data.label_counts()
    assert counts[4] / sum(counts) < 0.02
    assert counts == torch.bincount(torch.stack(targets(data.train)).flatten()).tolist()


def targets(dataset) -> list[torch.Tensor]:
    """Labels straight from the source: no transforms, so big images stay fast."""
    return [dataset.source.target(i) for i in range(len(dataset))]


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_classification_star_is_rare(size):
    data = shapes_splits(task="classification", image_size=size, num_samples=256, seed=0)
    labels = torch.stack(targets(data.train) + targets(data.val))
    share = torch.bincount(labels, minlength=4).float() / len(labels)
    assert 0.02 < share[3] < 0.08
    assert all(s > 0.2 for s in share[:3])
    assert data.label_counts() == torch.bincount(torch.stack(targets(data.train))).tolist()


def test_shapes_build_fast():
    import time

    start = time.process_time()  # CPU time: other processes on the box do not count
    data = shapes_splits(task="segmentation", image_size=64, num_samples=256, seed=5)
    data.label_counts()  # draws every training sample
    assert time.process_time() - start < 2


def test_unknown_builtin_suggests_a_name(registry):
    with pytest.raises(UsageError, match=r"unknown dataset 'builtin:shape'.*builtin:shapes"):
        load_data("builtin:shape", "segmentation", registry)


def test_num_classes_may_widen_a_builtin_but_not_shrink_it(registry):
    data = load_data("builtin:shapes", "segmentation", registry, num_samples=4, num_classes=7)
    assert data.num_classes == 7 and data.class_names[5:] == ["class_5", "class_6"]
    assert len(data.label_counts()) == 7
    with pytest.raises(UsageError, match="--num-classes 3 is fewer than the 5 classes"):
        load_data("builtin:shapes", "segmentation", registry, num_samples=4, num_classes=3)


# --- transforms -------------------------------------------------------------------------


def test_flip_moves_image_and_mask_together(tmp_path):
    # The red channel encodes the column, the mask its quarter: a flip that
    # moved only one of them would break mask == red // 64.
    columns = np.arange(32, dtype=np.uint8) * 8
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[..., 0] = columns
    pair(tmp_path, "a", np.broadcast_to(columns // 64, (32, 32)), image)
    pair(tmp_path, "b", np.broadcast_to(columns // 64, (32, 32)), image)
    data = load_data(str(tmp_path), "segmentation", Registry("dataset"), image_size=32)
    seen = set()
    torch.manual_seed(0)
    for _ in range(20):
        x, mask = data.train[0]
        red = torch.round((x[0] * STD[0] + MEAN[0]) * 255).long()
        assert torch.equal(mask, red // 64)
        seen.add(bool(mask[0, 0] == 3))
    assert seen == {True, False}  # both flipped and unflipped samples occurred


# --- folders --------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_written_shapes_load_back_with_the_same_labels(registry, tmp_path, task):
    write_shapes(tmp_path / "d", task=task, image_size=32, num_samples=30, seed=4)
    builtin = load_data(
        "builtin:shapes", task, registry, image_size=32, num_samples=30, seed=4, augment=False
    )
    folder = load_data(str(tmp_path / "d"), task, registry, image_size=32, augment=False)
    assert folder.class_names == builtin.class_names
    assert folder.num_classes == builtin.num_classes
    assert folder.label_counts() == builtin.label_counts()
    for split in ("train", "val"):
        a, b = items(getattr(builtin, split)), items(getattr(folder, split))
        if task == "segmentation":  # same order, lossless PNG: identical items
            for (xa, ya), (xb, yb) in zip(a, b, strict=True):
                assert torch.equal(xa, xb) and torch.equal(ya, yb)
        else:  # class folders group files by class
            assert sorted(int(y) for _, y in a) == sorted(int(y) for _, y in b)


def test_write_shapes_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an empty folder"):
        write_shapes(tmp_path, image_size=32, num_samples=4)


def test_label_counts_are_exact(tmp_path):
    pair(tmp_path / "train", "a", np.array([[0, 0, 1, 255], [2, 2, 2, 1]] * 2))
    pair(tmp_path / "train", "b", np.array([[1, 1, 1, 1], [255, 255, 0, 3]] * 2))
    pair(tmp_path / "val", "c", np.array([[3, 3, 3, 3], [3, 3, 3, 3]] * 2))
    data = load_data(str(tmp_path), "segmentation", Registry("dataset"), image_size=4)
    assert data.num_classes == 4 and data.class_names == [f"class_{i}" for i in range(4)]
    assert data.label_counts() == [6, 12, 6, 2]  # train only, 255 ignored

    for cls, n in (("cat", 3), ("dog", 1)):
        for i in range(n):
            save(tmp_path / "cls" / "train" / cls / f"{i}.png", rgb())
        save(tmp_path / "cls" / "val" / cls / "v.png", rgb())
    data = load_data(str(tmp_path / "cls"), "classification", Registry("dataset"), image_size=8)
    assert data.class_names == ["cat", "dog"]
    assert data.label_counts() == [3, 1]


def test_seeded_split_keeps_every_sample_once(tmp_path):
    for i in range(10):
        pair(tmp_path, f"{i:02d}", np.full((4, 4), i % 3))
    data = load_data(
        str(tmp_path), "segmentation", Registry("dataset"), image_size=4, val_fraction=0.3, seed=9
    )
    # by the hash of each path: 4 of these 10 names fall under 0.3 (one draw each)
    assert (len(data.train), len(data.val)) == (6, 4)
    again = load_data(
        str(tmp_path), "segmentation", Registry("dataset"), image_size=4, val_fraction=0.3, seed=1
    )
    # The split does not follow the training seed: a baseline keeps its val set.
    assert data.val.source.images == again.val.source.images  # type: ignore[attr-defined]
    files = data.train.source.images + data.val.source.images  # type: ignore[attr-defined]
    assert sorted(files) == sorted((tmp_path / "images").iterdir())


def test_class_folders_at_the_top_are_split(tmp_path):
    for cls in ("a", "b"):
        for i in range(5):
            save(tmp_path / cls / f"{i}.jpg", rgb(10, 12))
    data = load_data(str(tmp_path), "classification", Registry("dataset"), image_size=6)
    assert (len(data.train), len(data.val)) == (8, 2)
    assert data.train[0][0].shape == (3, 6, 6)


def test_images_and_masks_are_resized(tmp_path):
    mask = np.zeros((12, 16), dtype=np.uint8)
    mask[:, 8:] = 2
    pair(tmp_path / "train", "a", mask, rgb(12, 16))
    pair(tmp_path / "val", "b", mask, rgb(12, 16))
    squash = load_data(
        str(tmp_path), "segmentation", Registry("dataset"), image_size=8, resize="squash"
    )
    image, target = squash.val[0]
    assert image.shape == (3, 8, 8) and target.shape == (8, 8)
    assert set(target.unique().tolist()) == {0, 2}  # nearest: no blended labels
    assert squash.num_classes == 3
    keep = load_data(str(tmp_path), "segmentation", Registry("dataset"), image_size=8)
    image, target = keep.val[0]  # the shorter side to 8, the ratio kept; the mask as it is
    assert image.shape == (3, 8, 10) and target.shape == (12, 16)  # 16 * 8 / 12, floored
    image, target = keep.train[0]  # trained on an 8x8 crop, the mask cropped with it
    assert image.shape == (3, 8, 8) and target.shape == (8, 8)
    assert set(target.unique().tolist()) <= {0, 2}


def test_pascal_voc_layout(tmp_path):
    palette = [0, 0, 0, 128, 0, 0] + [0, 0, 0] * 253 + [224, 224, 192]
    for stem, split in (("2007_1", "train"), ("2007_2", "val")):
        save(tmp_path / "JPEGImages" / f"{stem}.jpg", rgb(8, 8))
        mask = Image.fromarray(np.array([[0, 1, 255, 15] * 2] * 8, dtype=np.uint8))
        mask.putpalette(palette)
        (tmp_path / "SegmentationClass").mkdir(exist_ok=True)
        mask.save(tmp_path / "SegmentationClass" / f"{stem}.png")
        lists = tmp_path / "ImageSets" / "Segmentation"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"{split}.txt").write_text(f"{stem}\n")
    data = load_data(str(tmp_path), "segmentation", Registry("dataset"), image_size=8)
    assert data.num_classes == 21 and data.class_names[15] == "person"
    assert (len(data.train), len(data.val)) == (1, 1)
    assert data.label_counts()[:2] == [16, 16] and data.label_counts()[15] == 16
    fewer = load_data(str(tmp_path), "segmentation", Registry("dataset"), num_classes=16)
    assert fewer.class_names[-1] == "person"
    assert "label 15" in error(spec=tmp_path, num_classes=8)


# --- bad input --------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    assert f"'{tmp_path / 'nope'}' not found" in error(spec=tmp_path / "nope")


def test_empty_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    assert "is empty" in error(spec=tmp_path)
    assert "no class folders" in error(spec=tmp_path / "images", task="classification")


def test_split_with_no_samples(tmp_path):
    pair(tmp_path / "train", "a", np.zeros((4, 4)))
    (tmp_path / "val" / "images").mkdir(parents=True)
    (tmp_path / "val" / "masks").mkdir(parents=True)
    message = error(spec=tmp_path)
    assert "split 'val'" in message and "no samples" in message


def test_too_few_samples_to_split(tmp_path):
    pair(tmp_path, "a", np.zeros((4, 4)))
    assert "1 sample(s), too few to split" in error(spec=tmp_path)


def test_train_without_val(tmp_path):
    pair(tmp_path / "train", "a", np.zeros((4, 4)))
    assert "has train/ but no val/" in error(spec=tmp_path)


def test_mask_value_out_of_range(tmp_path):
    for stem in ("a", "b"):
        pair(tmp_path, stem, np.zeros((4, 4)))
    pair(tmp_path, "c", np.array([[0, 1, 7, 255]] * 4))
    message = error(spec=tmp_path, num_classes=5)
    assert str(tmp_path / "masks" / "c.png") in message
    assert "label 7" in message and "5 classes" in message
    (tmp_path / "classes.txt").write_text("bg\nfg\n")
    assert "label 7" in error(spec=tmp_path)


def test_image_and_mask_of_different_sizes(tmp_path):
    pair(tmp_path, "a", np.zeros((4, 4)))
    save(tmp_path / "images" / "b.png", rgb(6, 5))
    save(tmp_path / "masks" / "b.png", np.zeros((4, 4), dtype=np.uint8))
    message = error(spec=tmp_path)
    assert "5x6" in message and "4x4" in message and "b.png" in message


def test_image_without_mask(tmp_path):
    pair(tmp_path, "a", np.zeros((4, 4)))
    save(tmp_path / "images" / "lonely.png", rgb())
    message = error(spec=tmp_path)
    assert f"'{tmp_path / 'images' / 'lonely.png'}' has no mask" in message


def test_mask_with_colours_instead_of_labels(tmp_path):
    pair(tmp_path, "a", np.zeros((4, 4)))
    save(tmp_path / "images" / "b.png", rgb(4, 4))
    save(tmp_path / "masks" / "b.png", rgb(4, 4))
    assert "mode RGB; expected a single-channel PNG" in error(spec=tmp_path)


@pytest.mark.parametrize("kind", ["garbage", "truncated-png", "truncated-jpg"])
def test_unreadable_image(tmp_path, kind):
    noise = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    for i in range(3):
        save(tmp_path / "ok" / f"{i}.png", rgb())
        save(tmp_path / "bad" / f"{i}.png", rgb())
    suffix = ".jpg" if kind.endswith("jpg") else ".png"
    broken = save(tmp_path / "bad" / f"broken{suffix}", noise)
    content = broken.read_bytes()
    broken.write_bytes(b"not an image" if kind == "garbage" else content[: len(content) // 2])
    message = error(spec=tmp_path, task="classification")
    assert f"cannot read image '{broken}'" in message


def test_classification_with_one_class(tmp_path):
    for i in range(3):
        save(tmp_path / "cat" / f"{i}.png", rgb())
    assert "only one class ('cat')" in error(spec=tmp_path, task="classification")


def test_segmentation_folder_given_as_classification(tmp_path):
    pair(tmp_path, "a", np.zeros((4, 4)))
    assert "looks like a segmentation dataset" in error(spec=tmp_path, task="classification")


def test_plugin_datasets_keep_their_own_items():
    reg: Registry = Registry("dataset")
    own = [(torch.zeros(3, 2, 2), torch.tensor(1))] * 3

    def factory(*, task, image_size, num_samples, seed):
        return DataSplits(task, own, own, 2, ["a", "b"])

    reg.add("mine", Dataset("mine", factory), "test")
    data = load_data("builtin:mine", "classification", reg)
    assert data.train is own and not data.train_is_deterministic
    assert data.label_counts() == [0, 3]
