"""The built-in ``shapes`` dataset: coloured shapes on a noisy background, drawn
with PIL from (seed, index) alone, so one seed always gives the same pixels and
nothing is downloaded.

Segmentation: classes background, circle, square, triangle, star. Every image
holds two to four common shapes; one image in 16 also holds a star, drawn last
so it is never hidden. Stars cover well under 1% of all pixels: the rare class
that class weights and Dice losses exist for. Classification: one shape per
image, classes circle, square, triangle, star; one image in 20 is a star.

Colours lean towards one hue per class, with jitter, a background gradient and
pixel noise, so a small U-Net learns the task in a few epochs without it being
trivial.

Split: sample ``i`` is the same whichever split holds it; the first 80% of
``num_samples`` are train and the rest val (samples are independent draws, so
a contiguous split is a random one). Samples are drawn on first use and kept.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ftkit.data.splits import DataSplits
from ftkit.data.transforms import IGNORE_INDEX, SampleDataset
from ftkit.errors import UsageError, unknown

SEGMENTATION_CLASSES = ("background", "circle", "square", "triangle", "star")
CLASSIFICATION_CLASSES = ("circle", "square", "triangle", "star")
VAL_FRACTION = 0.2
MIN_IMAGE_SIZE = 16
STAR_EVERY = {"segmentation": 16, "classification": 20}  # one image in N has a star

_COLOURS = {
    "circle": (210, 70, 60),
    "square": (60, 130, 220),
    "triangle": (70, 190, 90),
    "star": (235, 205, 50),
}


def class_names(task: str) -> tuple[str, ...]:
    if task == "segmentation":
        return SEGMENTATION_CLASSES
    if task == "classification":
        return CLASSIFICATION_CLASSES
    raise unknown("task", task, ["segmentation", "classification"])


def has_star(task: str, seed: int, index: int) -> bool:
    # A fixed period, not a coin flip: every run of N samples holds exactly one
    # star, so "rare" holds for any num_samples, seed and split.
    period = STAR_EVERY[task]
    return (index + seed) % period == 0


def draw_sample(task: str, image_size: int, seed: int, index: int) -> tuple[np.ndarray, Any]:
    """Sample ``index``: a uint8 (H, W, 3) image and a uint8 (H, W) mask of class
    ids (segmentation) or an int class id (classification)."""
    rng = np.random.default_rng([seed % 2**64, index])
    size = image_size
    image = Image.fromarray(_background(rng, size))
    paint = ImageDraw.Draw(image)
    star = has_star(task, seed, index)
    if task == "classification":
        label = 3 if star else int(rng.integers(0, 3))
        _draw_shape(rng, size, paint, None, CLASSIFICATION_CLASSES[label], 0, (0.22, 0.38))
        return _add_noise(rng, image), label

    mask = Image.new("L", (size, size), 0)
    label_paint = ImageDraw.Draw(mask)
    labels = [int(k) for k in rng.integers(1, 4, size=int(rng.integers(2, 5)))]
    for label in labels:
        _draw_shape(rng, size, paint, label_paint, SEGMENTATION_CLASSES[label], label, (0.1, 0.2))
    if star:
        _draw_shape(rng, size, paint, label_paint, "star", 4, (0.16, 0.24))
    return _add_noise(rng, image), np.array(mask, dtype=np.uint8)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(30, 130, 3)
    slope = rng.uniform(-40, 40, 3)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-0.5, 0.5, size)
    along = math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]
    pixels = base + along[..., None] * slope
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _draw_shape(
    rng: np.random.Generator,
    size: int,
    paint: ImageDraw.ImageDraw,
    label_paint: ImageDraw.ImageDraw | None,
    kind: str,
    label: int,
    radius: tuple[float, float],
) -> None:
    r = rng.uniform(*radius) * size
    cx, cy = rng.uniform(r, size - r, 2)
    angle = rng.uniform(0, 2 * math.pi)
    jittered = np.clip(np.add(_COLOURS[kind], rng.integers(-50, 51, 3)), 0, 255)
    colour = tuple(int(c) for c in jittered)
    # No anti-aliasing: image and mask get exactly the same pixels.
    for canvas, fill in ((paint, colour), (label_paint, label)):
        if canvas is None:
            continue
        if kind == "circle":
            canvas.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            canvas.polygon(_polygon(kind, cx, cy, r, angle), fill=fill)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        radii, turns = [r] * 4, 4
    elif kind == "triangle":
        radii, turns = [r] * 3, 3
    else:  # star: outer and inner points alternate
        radii, turns = [r, 0.45 * r] * 5, 10
    step = 2 * math.pi / turns
    return [
        (cx + rad * math.cos(angle + k * step), cy + rad * math.sin(angle + k * step))
        for k, rad in enumerate(radii)
    ]


def _add_noise(rng: np.random.Generator, image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 10, (*image.size[::-1], 3))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


class ShapesSource:
    """Samples ``ids`` of a shapes set, drawn on first use and kept in memory."""

    def __init__(self, task: str, image_size: int, seed: int, ids: range) -> None:
        self.task = task
        self.image_size = image_size
        self.seed = seed
        self.ids = ids
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def _sample(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self._cache.get(index)
        if sample is None:
            pixels, target = draw_sample(self.task, self.image_size, self.seed, self.ids[index])
            image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
            sample = self._cache[index] = (image, torch.as_tensor(target))
        return sample

    def image(self, index: int) -> torch.Tensor:
        return self._sample(index)[0]

    def target(self, index: int) -> torch.Tensor:
        return self._sample(index)[1].long()


def split_ids(num_samples: int) -> dict[str, range]:
    n_val = max(1, round(num_samples * VAL_FRACTION))
    return {"train": range(num_samples - n_val), "val": range(num_samples - n_val, num_samples)}


def shapes_splits(
    *, task: str, image_size: int = 64, num_samples: int = 256, seed: int = 0
) -> DataSplits:
    """The shapes set as train/val datasets (normalised, not yet augmented)."""
    names = _check(task, image_size, num_samples)
    train, val = (
        SampleDataset(ShapesSource(task, image_size, seed, ids), task)
        for ids in split_ids(num_samples).values()
    )
    return DataSplits(task, train, val, len(names), list(names))


def write_shapes(
    out_dir: str | Path,
    task: str = "segmentation",
    image_size: int = 64,
    num_samples: int = 256,
    seed: int = 0,
) -> Path:
    """Write the shapes set in the folder layout ``load_data`` reads, as an
    example of what a user's data should look like:

    - segmentation: ``train/images/*.png``, ``train/masks/*.png`` (palette PNGs
      whose indices are the labels), the same under ``val/``;
    - classification: ``train/CLASS/*.png`` and ``val/CLASS/*.png``;

    plus ``classes.txt``, the class names in label order.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"'{out}' is not an empty folder; choose a new or empty one")
    names = _check(task, image_size, num_samples)
    width = max(5, len(str(num_samples - 1)))  # zero-padded, so file order is sample order
    palette = _palette(names)
    for split, ids in split_ids(num_samples).items():
        for index in ids:
            pixels, target = draw_sample(task, image_size, seed, index)
            stem = f"{index:0{width}d}"
            if task == "segmentation":
                mask = Image.fromarray(target)
                mask.putpalette(palette)  # L becomes P, values unchanged
                _save(Image.fromarray(pixels), out / split / "images" / f"{stem}.png")
                _save(mask, out / split / "masks" / f"{stem}.png")
            else:
                _save(Image.fromarray(pixels), out / split / names[target] / f"{stem}.png")
    (out / "classes.txt").write_text("\n".join(names) + "\n")
    return out


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _palette(names: tuple[str, ...]) -> list[int]:
    """Label colours, so the masks are readable in an image viewer."""
    colours = [[0, 0, 0]] * 256
    for label, name in enumerate(names):
        colours[label] = list(_COLOURS.get(name, (0, 0, 0)))
    colours[IGNORE_INDEX] = [255, 255, 255]
    return [c for colour in colours for c in colour]


def _check(task: str, image_size: int, num_samples: int) -> tuple[str, ...]:
    names = class_names(task)
    if image_size < MIN_IMAGE_SIZE:
        raise UsageError(
            f"image size {image_size} is too small for builtin:shapes; "
            f"expected at least {MIN_IMAGE_SIZE}"
        )
    if num_samples < 2:
        raise UsageError(
            f"builtin:shapes needs at least 2 samples (one train, one val), got {num_samples}"
        )
    return names
