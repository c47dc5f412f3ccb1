"""The data index (issue 25): opening a folder lists files and reads nothing
else once its index is cached; the index is computed in worker processes, keyed
by the state of the files, and gives what a pass over every file gave; masks
stay on disk."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image

from ftkit.class_weights import class_weights
from ftkit.data import index as data_index
from ftkit.data import load_data
from ftkit.data.folders import FolderSource, hold_back_added, load_folder
from ftkit.data.transforms import resize_mask
from ftkit.errors import UsageError
from ftkit.registry import Registry

HOUR = 3600


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def seg_folder(root: Path, n: int = 12, suffix: str = ".png") -> Path:
    """``n`` 12x16 pairs of labels 0, 1, 2 and 255, each mask its own."""
    rng = np.random.default_rng(0)
    for i in range(n):
        save(root / "images" / f"{i:03d}.png", rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
        mask = np.zeros((12, 16), np.uint8)
        mask[int(rng.integers(0, 12)) :, :] = 1
        mask[:, : int(rng.integers(1, 16))] = 2
        mask[0, 0] = 255
        save(root / "masks" / f"{i:03d}{suffix}", mask)
    return settle(root)


def class_folder(root: Path, n: int = 6) -> Path:
    for name in ("cat", "dog"):
        for i in range(n):
            save(root / name / f"{i}.png", np.full((6, 8, 3), 40 * i, np.uint8))
    return settle(root)


def settle(root: Path) -> Path:
    """``root``, or the files in it, as if written an hour ago: trusted by their
    sizes and times alone (files modified just before a check are also by a
    digest of their bytes)."""
    then = time.time() - HOUR
    for path in [root, *root.rglob("*")]:
        os.utime(path, (then, then))
    return root


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The files PIL opens from now on."""
    seen: list[str] = []
    original = PIL.Image.open

    def counting(fp, *args, **kwargs):
        seen.append(str(fp))
        return original(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", counting)
    return seen


@pytest.fixture(params=["serial", "workers"])
def pass_kind(request, monkeypatch) -> str:
    """The pass in this process, or in worker processes (as for a large folder)."""
    if request.param == "workers":
        monkeypatch.setattr(data_index, "PARALLEL_FROM", 0)
        monkeypatch.setattr(data_index, "PER_WORKER", 1)
        monkeypatch.setattr(data_index, "workers", lambda files: 2)
    return request.param


def seg(root: Path, **kwargs):
    kwargs.setdefault("image_size", 8)
    return load_folder(root, "segmentation", **kwargs)


def index_files() -> list[Path]:
    return sorted((Path(os.environ["FTKIT_CACHE"]) / "index").glob("*.json"))


# --- (a) a file that goes bad after the index was written ----------------------------


def test_a_corrupt_image_added_later_is_refused_naming_it(tmp_path, pass_kind):
    root = seg_folder(tmp_path / "d")
    seg(root)
    assert len(index_files()) == 1
    bad = root / "images" / "zzz.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    save(root / "masks" / "zzz.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(UsageError, match=f"cannot read image '{bad}'"):
        seg(root)
    # the same size, new bytes: the times tell
    good = root / "images" / "003.png"
    good.write_bytes(b"x" * good.stat().st_size)
    bad.unlink()
    (root / "masks" / "zzz.png").unlink()
    with pytest.raises(UsageError, match=f"cannot read image '{good}'"):
        seg(root)


def test_a_mask_relabelled_in_place_is_read_again(tmp_path):
    # Uncompressed TIFF masks: the edited file keeps its size, which the
    # folder's fingerprint would not see.
    root = seg_folder(tmp_path / "d", suffix=".tif")
    (root / "classes.txt").write_text("a\nb\nc\n")
    assert seg(root).num_classes == 3
    victim = root / "masks" / "005.tif"
    size = victim.stat().st_size
    save(victim, np.full((12, 16), 7, np.uint8))
    assert victim.stat().st_size == size
    with pytest.raises(UsageError, match=f"mask '{victim}' has label 7, but there are 3"):
        seg(root)


# --- (b) what the index gives is what a pass over every file gives -----------------


def direct_counts(source: FolderSource, num_classes: int, squash_to: int | None = None):
    """Pixels per class of the source's masks, read here with PIL."""
    counts = np.zeros(num_classes, np.int64)
    for path in source.masks or []:
        mask = torch.from_numpy(np.array(Image.open(path)))
        if squash_to is not None:
            mask = resize_mask(mask, squash_to)
        labels = mask.numpy().ravel()
        counts += np.bincount(labels[labels != 255], minlength=num_classes)
    return counts.tolist()


@pytest.mark.parametrize("resize", ["keep", "squash"])
def test_label_counts_from_the_index_are_the_pixels_of_the_masks(tmp_path, pass_kind, resize):
    root = seg_folder(tmp_path / "d", n=20)
    cold = seg(root, resize=resize)
    warm = seg(root, resize=resize)
    squash_to = 8 if resize == "squash" else None
    expected = direct_counts(cold.train.source, 3, squash_to)
    assert cold.label_counts() == warm.label_counts() == expected
    # and what count_labels reads from every target
    targets = [cold.train.source.target(i) for i in range(len(cold.train))]
    flat = torch.cat([t.reshape(-1) for t in targets])
    assert torch.bincount(flat[flat != 255], minlength=3).tolist() == expected
    for mode in ("inverse", "median", "auto"):
        assert class_weights(mode, warm.label_counts()) == class_weights(mode, expected)
    assert warm.train.source.sizes == cold.train.source.sizes == [(12, 16)] * len(cold.train)


def test_classification_counts_and_sizes_from_the_index(tmp_path):
    root = class_folder(tmp_path / "d")
    cold = load_folder(root, "classification", image_size=4)
    warm = load_folder(root, "classification", image_size=4)
    labels = [int(cold.train.source.target(i)) for i in range(len(cold.train))]
    assert cold.label_counts() == warm.label_counts() == np.bincount(labels).tolist()
    assert warm.train.source.sizes == [(6, 8)] * len(warm.train)


def test_the_workers_find_what_the_process_finds(tmp_path, monkeypatch):
    root = seg_folder(tmp_path / "d", n=10)
    samples = [(p, root / "masks" / p.name) for p in sorted((root / "images").iterdir())]
    serial = data_index.index_folder(root, "segmentation", samples, image_size=8, squash_to=8)
    for f in index_files():
        f.unlink()
    monkeypatch.setattr(data_index, "PARALLEL_FROM", 0)
    monkeypatch.setattr(data_index, "PER_WORKER", 1)
    assert data_index.workers(10) == min(10, len(os.sched_getaffinity(0)))
    monkeypatch.setattr(data_index, "workers", lambda files: 2)
    pids = tmp_path / "pids"
    original = data_index.check_image

    def noting(path, size):  # a forked worker inherits it
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        return original(path, size)

    monkeypatch.setattr(data_index, "check_image", noting)
    pooled = data_index.index_folder(root, "segmentation", samples, image_size=8, squash_to=8)
    assert pooled == serial
    if multiprocessing.get_start_method() == "fork":
        assert str(os.getpid()) not in pids.read_text().split()


# --- (c) a warm start decodes nothing --------------------------------------------------


def test_a_warm_start_opens_no_image(tmp_path, opened):
    seg_root, cls_root = seg_folder(tmp_path / "s"), class_folder(tmp_path / "c")
    for spec, task in ((seg_root, "segmentation"), (cls_root, "classification")):
        load_data(str(spec), task, Registry("dataset"), image_size=8).label_counts()
    assert len(opened) == 2 * 12 + 12  # every image and mask, once
    opened.clear()
    for spec, task in ((seg_root, "segmentation"), (cls_root, "classification")):
        data = load_data(str(spec), task, Registry("dataset"), image_size=8)
        data.label_counts()
        data.train.sizes()
        assert data.train.source.sizes
    assert opened == []


def test_a_file_edited_within_one_clock_step_is_read_again(tmp_path, opened, monkeypatch):
    """A coarse file-system clock can give an edit right after the check the time
    the checked file had: files that new are trusted by a digest of their bytes."""
    root = seg_folder(tmp_path / "d", n=4)
    (root / "classes.txt").write_text("a\nb\nc\n")
    mask = root / "masks" / "new.tif"
    save(root / "images" / "new.png", np.zeros((12, 16, 3), np.uint8))
    save(mask, np.zeros((12, 16), np.uint8))
    seg(root)
    opened.clear()
    seg(root)
    assert opened == []  # the digest matched: read, not decoded
    before = mask.stat()
    save(mask, np.full((12, 16), 7, np.uint8))  # the same size, and then the same time
    os.utime(mask, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (mask.stat().st_size, mask.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(UsageError, match=f"mask '{mask}' has label 7"):
        seg(root)
    save(mask, np.zeros((12, 16), np.uint8))
    seg(root)
    (written,) = index_files()
    assert '"digest"' in written.read_text()
    monkeypatch.setattr(data_index, "RACY_SECONDS", 0.0)  # as if two seconds went by
    opened.clear()
    seg(root)
    assert opened == [] and '"digest"' not in written.read_text()  # aged: times suffice


# --- (d) the key -----------------------------------------------------------------------


def test_the_index_is_per_task_and_per_folder(tmp_path, opened):
    root = class_folder(tmp_path / "d")
    load_folder(root, "classification", image_size=4)
    (written,) = index_files()
    seg_file, _ = data_index.cache_file(root, "segmentation")
    cls_file, _ = data_index.cache_file(root, "classification")
    assert written == cls_file != seg_file
    assert data_index.cache_file(tmp_path / "other", "classification")[0] != cls_file
    # A record of another task is no record: its file says which task it is.
    assert data_index._read(written, str(root.resolve()), "segmentation") == {}
    assert data_index._read(written, str(root.resolve()), "classification") != {}

    # a changed folder: the added file, and only it, is read
    opened.clear()
    added = settle(save(root / "cat" / "new.png", np.zeros((6, 8, 3), np.uint8)))
    load_folder(root, "classification", image_size=4)
    assert opened == [str(added)]
    opened.clear()
    load_folder(root, "classification", image_size=4)
    assert opened == []


def test_a_garbled_index_is_read_again_not_trusted(tmp_path, opened):
    root = seg_folder(tmp_path / "d", n=4)
    first = seg(root).label_counts()
    (written,) = index_files()
    written.write_text('{"format": 1, "samples": [')
    opened.clear()
    assert seg(root).label_counts() == first
    assert len(opened) == 8


def test_an_unwritable_cache_folder_warns_once_and_works(tmp_path, monkeypatch, capsys):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path / "a-file" / "cache"))
    monkeypatch.setattr(data_index, "_warned", set())
    root = seg_folder(tmp_path / "d", n=4)
    counts = [seg(root).label_counts() for _ in range(2)]
    assert counts[0] == counts[1] and sum(counts[0]) > 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "cannot write the data index cache" in warnings[0] and "FTKIT_CACHE" in warnings[0]


def test_the_cache_folder_defaults_to_the_user_cache(monkeypatch):
    import platformdirs

    monkeypatch.delenv("FTKIT_CACHE")
    assert data_index.cache_dir() == Path(platformdirs.user_cache_dir("ftkit"))


# --- (e) masks stay on disk -------------------------------------------------------------


def test_the_source_holds_no_mask(tmp_path):
    root = seg_folder(tmp_path / "d", n=30)
    data = seg(root)
    for source in (data.train.source, data.val.source):
        for name, value in vars(source).items():
            assert not isinstance(value, torch.Tensor | np.ndarray), name
            if isinstance(value, list):
                assert all(isinstance(x, Path | tuple | int) for x in value), name
        held = source.pixels.values.nbytes + source.pixels.counts.nbytes  # a few labels each
        assert held <= len(source) * 4 * 16
        # the mask as the file holds it, read on use
        i = len(source) - 1
        assert torch.equal(
            source.target(i), torch.from_numpy(np.array(Image.open(source.masks[i]))).long()
        )


def test_moved_samples_take_their_label_counts_along(tmp_path):
    root = seg_folder(tmp_path / "d", n=20)
    data = seg(root, val_fraction=0.5)
    train, val = data.train.source, data.val.source
    assert len(val) > 2
    record = {"train": [p.relative_to(root).as_posix() for p in train.images]}
    record["val"] = [p.relative_to(root).as_posix() for p in val.images[1:]]
    added = val.images[0]
    assert hold_back_added(data, root, record) == [added.relative_to(root).as_posix()]
    assert train.images[-1] == added and added not in val.images
    assert data.label_counts() == direct_counts(train, 3)
    assert val.label_counts(3) == direct_counts(val, 3)
    assert len(train.pixels) == len(train.images) == len(train.sizes) == len(train.masks)


def test_a_folders_statistics_are_measured_once_and_again_when_an_image_changes(tmp_path, opened):
    from ftkit.data.statistics import channel_statistics

    root = seg_folder(tmp_path / "s")
    train = load_data(str(root), "segmentation", Registry("dataset"), image_size=8).train
    first = channel_statistics(train)
    opened.clear()
    assert channel_statistics(train) == first  # from the cache: no image decoded
    assert opened == []
    pixels = torch.cat(
        [train.source.image(i).double().reshape(3, -1) for i in range(len(train))], 1
    )
    assert first[0] == pytest.approx(tuple((pixels / 255).mean(1).tolist()))
    edited = train.source.images[0]
    save(edited, np.zeros((12, 16, 3), np.uint8))  # edited: its modification time moves
    opened.clear()
    again = channel_statistics(train)
    assert again != first and len(opened) == len(train)  # measured anew, every image
