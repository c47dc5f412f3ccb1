"""The pictures of docs/data.md's geometry section, from ftkit's own transforms.

    python tools/geometry_pictures.py [OUT_DIR]      # default: docs/

Makes a 2:1 road-like scene (sky, road, a 1-pixel lane line) in a temporary
folder and writes:

- ``geometry-train.png``: the scene as stored, and four training items of
  ``--image-size 32 --crop 40,48`` (a random rescale of 0.5-2x, then a random
  crop, padded where the rescaled scene is smaller: the image with the mean, the
  mask with 255, drawn light grey), each image beside its mask, at twice the size;
- ``geometry-eval.png``: how it is scored: the image at ``--image-size 32``
  with its ratio kept (what the model sees, 32 x 64, drawn 3x), and the mask
  at the scene's own 96 x 192 pixels, which the logits are resized back to.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ftkit.data import load_data
from ftkit.data.transforms import TrainCrop
from ftkit.registry import Registry

PALETTE = np.array([[90, 160, 230], [80, 80, 80], [250, 250, 250]], np.uint8)  # sky, road, line
PAD = np.array([200, 200, 200], np.uint8)


def scene(root: Path) -> None:
    height, width = 96, 192
    mask = np.zeros((height, width), np.uint8)
    mask[height // 2 :] = 1
    mask[height // 2 :, width // 2] = 2  # the lane line: one pixel wide
    noise = np.random.default_rng(0).integers(-12, 13, (height, width, 3))
    image = np.clip(PALETTE[mask].astype(int) + noise, 0, 255).astype(np.uint8)
    for split in ("train", "val"):  # the same scene on both sides
        for folder, array in (("images", image), ("masks", mask)):
            (root / split / folder).mkdir(parents=True)
            Image.fromarray(array).save(root / split / folder / "scene.png")


def coloured(mask: torch.Tensor) -> np.ndarray:
    m = mask.numpy()
    out = PALETTE[np.clip(m, 0, 2)]
    out[m == 255] = PAD
    return out


def pixels(image: torch.Tensor) -> np.ndarray:
    image = image + 0.5  # undo the mean
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def row(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    height = max(p.shape[0] for p in panels)
    padded = [
        np.pad(p, ((0, height - p.shape[0]), (0, gap), (0, 0)), constant_values=255) for p in panels
    ]
    return np.concatenate(padded, axis=1)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        scene(Path(tmp))
        # a grey mean, so the pad (the mean) shows; std 1 keeps the pixels as they are
        common = {"image_size": 32, "augment": "none", "mean": (0.5,) * 3, "std": (1, 1, 1)}
        trained = load_data(
            tmp, "segmentation", Registry("dataset"), crop=TrainCrop((40, 48)), **common
        )
        stored = np.asarray(Image.open(Path(tmp) / "train" / "images" / "scene.png"))
        crops = []
        for _ in range(4):
            image, mask = trained.train[0]
            crops += [pixels(image), coloured(mask)]
        train_picture = row([stored, *[np.kron(c, np.ones((2, 2, 1), np.uint8)) for c in crops]])
        Image.fromarray(train_picture).save(out / "geometry-train.png")
        scored = load_data(tmp, "segmentation", Registry("dataset"), **common)
        image, mask = scored.val[0]
        eval_picture = row([np.kron(pixels(image), np.ones((3, 3, 1), np.uint8)), coloured(mask)])
        Image.fromarray(eval_picture).save(out / "geometry-eval.png")
    print(f"wrote {out / 'geometry-train.png'} and {out / 'geometry-eval.png'}")


if __name__ == "__main__":
    main()
