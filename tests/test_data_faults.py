"""Dataset folders that used to give silent wrong results (issue 16): image modes
clipped to white, lossy masks inventing classes, a layout read as the other task,
and run directories that named their data relative to the working directory."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_line_error
from PIL import Image

from ftkit.data.folders import RARE_LABEL_FRACTION, load_folder
from ftkit.errors import UsageError

ORIENTATION = 0x0112


def save(path: Path, image: Image.Image | np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, **kwargs)
    return path


def rgb(h: int = 4, w: int = 4, value: int = 100) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def fail(root: Path, task: str = "segmentation", **kwargs) -> str:
    with pytest.raises(UsageError) as info:
        load_folder(root, task, image_size=kwargs.pop("image_size", 4), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def png48(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG, written by hand: PIL cannot write one."""
    h, w, _ = pixels.shape
    raw = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


def classification_with(root: Path, write) -> tuple[torch.Tensor, Path]:
    """A two-class folder whose class 'odd' holds the image ``write(path)`` makes;
    that image as the dataset gives it (before normalisation)."""
    odd = write(root / "odd" / "x")
    for i in range(3):
        save(root / "odd" / f"plain{i}.png", rgb())
        save(root / "other" / f"{i}.png", rgb(value=50))
    data = load_folder(root, "classification", image_size=4, val_fraction=0.2)
    for split in (data.train, data.val):
        if odd in split.source.images:
            return split.source.image(split.source.images.index(odd)), odd
    raise AssertionError(f"{odd} not in the dataset")


ROW16 = np.array([[0, 32768, 65535, 1000]] * 4)
# Deep pixels keep their precision: floats in [0, 1], as ToDtype(scale=True) reads them.
ROW16_AS_FLOAT = [float(np.float32(v) / np.float32(65535)) for v in ROW16[0]]
CMYK = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [255, 0, 0, 0], [0, 255, 255, 0]]] * 4, np.uint8)


def _palette(path: Path) -> Path:
    im = Image.new("P", (4, 4))
    im.putdata([0, 1, 2, 1] * 4)
    im.putpalette([10, 20, 30, 200, 0, 0, 0, 0, 250] + [0] * 759)
    return save(path.with_suffix(".png"), im)


def _with_alpha(mode: str):
    def write(path: Path) -> Path:
        colour = np.array([[[10, 20, 30], [40, 50, 60], [70, 80, 90], [1, 2, 3]]] * 4, np.uint8)
        alpha = np.array([[0, 128, 255, 0]] * 4, np.uint8)[..., None]
        if mode == "LA":
            colour = colour[..., :1]
        return save(path.with_suffix(".png"), np.concatenate([colour, alpha], axis=2))

    return write


# mode -> (writer, the first row of the RGB image ftkit must see: (R, G, B) per pixel)
MODES = {
    "L": (
        lambda p: save(p.with_suffix(".png"), np.array([[0, 100, 200, 255]] * 4, np.uint8)),
        [(v, v, v) for v in (0, 100, 200, 255)],
    ),
    "1": (
        lambda p: save(p.with_suffix(".png"), Image.fromarray(np.array([[0, 1, 1, 0]] * 4, bool))),
        [(v, v, v) for v in (0, 255, 255, 0)],
    ),
    "I;16 png": (
        lambda p: save(p.with_suffix(".png"), ROW16.astype(np.uint16)),
        [(v, v, v) for v in ROW16_AS_FLOAT],
    ),
    "I;16 tiff": (
        lambda p: save(p.with_suffix(".tif"), ROW16.astype(np.uint16)),
        [(v, v, v) for v in ROW16_AS_FLOAT],
    ),
    "I (32-bit) tiff": (
        lambda p: save(p.with_suffix(".tif"), ROW16.astype(np.int32)),
        [(v, v, v) for v in ROW16_AS_FLOAT],
    ),
    "48-bit RGB png": (
        lambda p: png48(
            p.with_suffix(".png"),
            np.array([[[65535, 32768, 0], [256, 512, 1024], [0, 0, 0], [65535] * 3]] * 4),
        ),
        [(255, 128, 0), (1, 2, 4), (0, 0, 0), (255, 255, 255)],
    ),
    "F in [0, 1]": (
        lambda p: save(p.with_suffix(".tif"), np.array([[0.0, 0.5, 1.0, 0.25]] * 4, np.float32)),
        [(v, v, v) for v in (0.0, 0.5, 1.0, 0.25)],
    ),
    "P": (_palette, [(10, 20, 30), (200, 0, 0), (0, 0, 250), (200, 0, 0)]),
    # Alpha is discarded: the colours as stored, whatever their transparency.
    "RGBA": (_with_alpha("RGBA"), [(10, 20, 30), (40, 50, 60), (70, 80, 90), (1, 2, 3)]),
    "LA": (_with_alpha("LA"), [(v, v, v) for v in (10, 40, 70, 1)]),
    "CMYK": (
        lambda p: save(p.with_suffix(".tif"), Image.frombytes("CMYK", (4, 4), CMYK.tobytes())),
        [(255, 255, 255), (0, 0, 0), (0, 255, 255), (255, 0, 0)],
    ),
}


# PIL opens a 48-bit PNG as 8-bit RGB: those keep 8 bits (a known limit, not ftkit's rule).
DEEP = {"I;16 png", "I;16 tiff", "I (32-bit) tiff", "F in [0, 1]"}


@pytest.mark.parametrize("mode", MODES)
def test_every_image_mode_becomes_faithful_rgb(tmp_path, mode):
    write, first_row = MODES[mode]
    image, _ = classification_with(tmp_path, write)
    assert image.dtype == (torch.float32 if mode in DEEP else torch.uint8)
    assert image.shape == (3, 4, 4)
    assert image[:, 0, :].T.tolist() == [list(p) for p in first_row]


def test_sixteen_bit_values_one_step_apart_are_two_model_inputs(tmp_path):
    """A 12-bit image in a 16-bit PNG: neighbouring levels stay apart after
    normalisation (an 8-bit detour would make 1000 and 1001 the same grey)."""
    levels = np.array([[1000, 1001, 1002, 4095]] * 4, np.uint16)
    image, odd = classification_with(tmp_path, lambda p: save(p.with_suffix(".png"), levels))
    data = load_folder(tmp_path, "classification", image_size=4, val_fraction=0.2)
    split = data.train if odd in data.train.source.images else data.val
    x, _ = split[split.source.images.index(odd)]
    row = x[0, 0].tolist()
    assert len(set(row)) == 4 and row == sorted(row)


REFUSED = {
    "F above 1": lambda p: save(p.with_suffix(".tif"), np.full((4, 4), 2.5, np.float32)),
    "F negative": lambda p: save(p.with_suffix(".tif"), np.full((4, 4), -0.5, np.float32)),
    "F NaN": lambda p: save(p.with_suffix(".tif"), np.full((4, 4), np.nan, np.float32)),
    "I beyond 16 bits": lambda p: save(p.with_suffix(".tif"), np.full((4, 4), 70000, np.int32)),
    "I negative": lambda p: save(p.with_suffix(".tif"), np.full((4, 4), -5, np.int32)),
    "LAB": lambda p: save(p.with_suffix(".tif"), Image.new("LAB", (4, 4))),
}


@pytest.mark.parametrize("case", REFUSED)
def test_images_without_a_faithful_conversion_are_refused_at_build_time(tmp_path, case):
    with pytest.raises(UsageError) as info:
        classification_with(tmp_path, REFUSED[case])
    message = str(info.value)
    odd = next((tmp_path / "odd").glob("x.*"))
    assert "\n" not in message
    assert f"image '{odd}' has mode {Image.open(odd).mode}" in message


def exif_with(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()


# EXIF orientation -> what a viewer shows, from the stored pixels
ORIENTED = {
    1: lambda a: a,
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, -1),  # turned 90 degrees clockwise
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", ORIENTED)
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = np.arange(16, dtype=np.uint8).reshape(4, 4) * 15

    def write(path: Path) -> Path:
        return save(path.with_suffix(".png"), stored, exif=exif_with(orientation))

    image, _ = classification_with(tmp_path, write)
    assert image[0].numpy().tolist() == ORIENTED[orientation](stored).tolist()


def test_masks_are_checked_against_the_oriented_image(tmp_path):
    # Stored 6 wide and 4 high, shown 4 wide and 6 high: the mask follows what is shown.
    for stem in ("a", "b", "c"):
        save(tmp_path / "images" / f"{stem}.png", rgb(4, 6), exif=exif_with(6))
        save(tmp_path / "masks" / f"{stem}.png", np.ones((6, 4), np.uint8))
    data = load_folder(tmp_path, "segmentation", image_size=4, num_classes=2)
    assert len(data.train) + len(data.val) == 3
    save(tmp_path / "masks" / "b.png", np.ones((4, 6), np.uint8))
    message = fail(tmp_path, num_classes=2)
    assert "b.png' is 6x4 but image" in message and "is 4x6" in message


# --- masks --------------------------------------------------------------------


def seg_folder(root: Path, n: int = 3, size: int = 8) -> None:
    for i in range(n):
        save(root / "images" / f"{i}.png", rgb(size, size))
        mask = np.zeros((size, size), np.uint8)
        mask[: size // 2] = 1
        save(root / "masks" / f"{i}.png", mask)


LOSSY_MASKS = {
    "jpg": ("m.jpg", {"format": "JPEG", "quality": 90}),
    "jpeg content named .png": ("m.png", {"format": "JPEG"}),
    "lossy webp": ("m.webp", {"format": "WEBP", "quality": 80}),
    "jpeg-compressed tiff": ("m.tif", {"format": "TIFF", "compression": "jpeg"}),
}


@pytest.mark.parametrize("case", LOSSY_MASKS)
def test_masks_in_a_lossy_format_are_refused(tmp_path, case):
    name, options = LOSSY_MASKS[case]
    seg_folder(tmp_path)
    (tmp_path / "masks" / "0.png").unlink()
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 1
    image = Image.fromarray(mask)
    if options["format"] == "WEBP":
        image = image.convert("RGB")  # WebP holds colour only
    path = save(tmp_path / "masks" / name.replace("m.", "0."), image, **options)
    message = fail(tmp_path, num_classes=2)
    assert f"mask '{path}' is a lossy" in message


@pytest.mark.parametrize("name", ["0.png", "0.tif"])
def test_masks_in_a_lossless_format_are_read(tmp_path, name):
    seg_folder(tmp_path)
    (tmp_path / "masks" / "0.png").unlink()
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 1
    save(tmp_path / "masks" / name, mask)
    data = load_folder(tmp_path, "segmentation", image_size=8, val_fraction=0.4)
    assert data.num_classes == 2


def test_float_masks_are_refused(tmp_path):
    # Label ids are integers: 0.6 would silently become label 0.
    seg_folder(tmp_path)
    (tmp_path / "masks" / "0.png").unlink()
    path = save(tmp_path / "masks" / "0.tif", np.full((8, 8), 0.6, np.float32))
    assert f"mask '{path}' has mode F; expected a single-channel PNG" in fail(tmp_path)


def rare_label_folder(root: Path, rare_pixels: int) -> None:
    """Three 100x100 masks of labels 0 and 1 (and some 255), with ``rare_pixels``
    of label 4."""
    for i in range(3):
        save(root / "images" / f"{i}.png", rgb(100, 100))
        mask = np.zeros((100, 100), np.uint8)
        mask[50:] = 1
        mask[0, :10] = 255  # ignored: not counted as labelled
        if i == 0:
            mask[90, :rare_pixels] = 4
        save(root / "masks" / f"{i}.png", mask)


LABELLED = 3 * 100 * 100 - 3 * 10
AT_THRESHOLD = int(np.ceil(LABELLED * RARE_LABEL_FRACTION))  # 3 of 29970 pixels


@pytest.mark.parametrize(
    ("rare_pixels", "num_classes", "classes_txt", "refused"),
    [
        (1, None, False, True),
        (AT_THRESHOLD - 1, None, False, True),
        (AT_THRESHOLD, None, False, False),  # at the threshold: a class
        (1, 5, False, False),  # the user said how many classes there are
        (1, None, True, False),  # ... or listed them
    ],
)
def test_a_rare_label_is_refused_when_the_classes_are_inferred(
    tmp_path, rare_pixels, num_classes, classes_txt, refused
):
    rare_label_folder(tmp_path, rare_pixels)
    if classes_txt:
        (tmp_path / "classes.txt").write_text("a\nb\nc\nd\ne\n")
    if refused:
        message = fail(tmp_path, image_size=16)
        assert f"label(s) 4 ({rare_pixels} px)" in message
        assert f"{LABELLED} labelled pixels" in message and "--num-classes" in message
    else:
        data = load_folder(tmp_path, "segmentation", image_size=16, num_classes=num_classes)
        assert data.num_classes == 5


# --- layouts ------------------------------------------------------------------


def seg_root(root: Path) -> None:
    seg_folder(root, n=2)


def seg_splits(root: Path) -> None:
    for split in ("train", "val"):
        seg_folder(root / split, n=2)


def voc(root: Path) -> None:
    save(root / "JPEGImages" / "a.jpg", rgb())
    save(root / "SegmentationClass" / "a.png", np.zeros((4, 4), np.uint8))


def class_root(root: Path) -> None:
    for name in ("cat", "dog"):
        for i in range(2):
            save(root / name / f"{i}.png", rgb())


def class_splits(root: Path) -> None:
    for split in ("train", "val"):
        class_root(root / split)


@pytest.mark.parametrize(
    ("layout", "task", "expected"),
    [
        (seg_root, "classification", "looks like a segmentation dataset"),
        (seg_splits, "classification", "looks like a segmentation dataset"),
        (voc, "classification", "looks like a segmentation dataset"),
        (class_root, "segmentation", "looks like a classification dataset"),
        (class_splits, "segmentation", "looks like a classification dataset"),
    ],
)
def test_a_layout_of_the_other_task_is_refused(tmp_path, layout, task, expected):
    layout(tmp_path)
    other = "classification" if task == "segmentation" else "segmentation"
    message = fail(tmp_path, task)
    assert expected in message and f"use --task {other}" in message


# --- run directories ------------------------------------------------------------

TRAIN = [
    "run",
    "--data",
    "data",
    "--epochs",
    "1",
    "--image-size",
    "32",
    "--batch-size",
    "4",
    "--strategy",
    "full",
    "--lr",
    "1e-3",
    "--model",
    "smp:unet:resnet18",
    "--num-classes",
    "2",
    "--out",
    "run",
]


@pytest.mark.slow
def test_a_run_names_its_data_from_any_directory_and_notices_changes(ftkit, tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    seg_folder(work / "data", n=10, size=32)
    # A folder of the same name where eval runs: it must not be scored instead.
    seg_folder(elsewhere / "data", n=20, size=32)
    trained = ftkit(*TRAIN, cwd=work)
    assert trained.returncode == 0, trained.stderr
    run = work / "run"
    saved = (run / "config.toml").read_text()
    assert f'data = "{work / "data"}"' in saved and "data_fingerprint = " in saved

    result = ftkit("eval", "--checkpoint", str(run), "--json", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    from ftkit.data.folders import load_folder

    own_val = len(load_folder(work / "data", "segmentation", image_size=8).val)
    assert json.loads(result.stdout)["samples"] == own_val  # the run's own images, not these
    # The saved config is still a config file.
    planned = ftkit("plan", "--config", str(run / "config.toml"), cwd=elsewhere)
    assert planned.returncode == 0, planned.stderr

    save(work / "data" / "images" / "new.png", rgb(32, 32))
    save(work / "data" / "masks" / "new.png", np.zeros((32, 32), np.uint8))
    # eval goes on with the run's own validation files (split.json), and says so
    grown = ftkit("eval", "--checkpoint", str(run), "--json", cwd=elsewhere)
    assert grown.returncode == 0, grown.stderr
    assert json.loads(grown.stdout)["samples"] == own_val
    assert f"'{work / 'data'}' changed since the run; scored on the run's own" in grown.stderr

    (run / "summary.json").unlink()  # as if the run had been stopped
    line = one_line_error(ftkit("run", "--resume", str(run), cwd=elsewhere))
    assert "changed since run" in line and "2 file(s) added" in line
    (work / "data" / "images" / "new.png").unlink()
    (work / "data" / "masks" / "new.png").unlink()
    resumed = ftkit("run", "--resume", str(run), cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
