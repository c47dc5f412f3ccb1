"""Is a 12-bit pattern learned from 16-bit PNGs as well as from 8-bit ones?

Builds one two-class task three ways, in a temporary folder:

- ``8-bit``: the pattern at 8 bits (the 12-bit values shifted right by 4);
- ``16-bit``: the 12-bit values stored in 16-bit PNGs (a few thousand of
  0..65535), read by ftkit as they are now (float32, no 8-bit detour);
- ``16-bit via 8 bits``: the same 16-bit images as ftkit read them before it
  kept their precision (``v * 255 / 65535`` rounded to 8 bits), saved as 8-bit
  PNGs, so the old reading is reproduced exactly.

The pattern: noisy grey images whose class says which half is brighter, by 48
of 4096 levels (3 at 8 bits). Each is trained from random initialisation
(``tv:resnet18``, ``--strategy full``, ``--normalize auto``: the data set's own
statistics) and the best validation accuracy printed.

    python tools/bench_bit_depth.py [--epochs 6] [--images 240]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
BASE, SIGNAL, NOISE = 2000, 48, 24  # in 12-bit levels (0..4095)


def twelve_bit(n: int, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        label = i % 2
        values = BASE + rng.integers(-NOISE, NOISE + 1, (SIZE, SIZE))
        half = slice(0, SIZE // 2) if label else slice(SIZE // 2, SIZE)
        values[:, half] += SIGNAL
        images.append((values.astype(np.uint16), label))
    return images


def write(root: Path, images: list[tuple[np.ndarray, int]], convert) -> Path:
    for i, (values, label) in enumerate(images):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(convert(values)).save(folder / f"{i:04d}.png")
    return root


VARIANTS = {
    "8-bit": lambda v: (v >> 4).astype(np.uint8),
    "16-bit": lambda v: v,
    "16-bit via 8 bits": lambda v: ((v.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--images", type=int, default=240)
    args = parser.parse_args()
    images = twelve_bit(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        for name, convert in VARIANTS.items():
            data = write(Path(tmp) / name.replace(" ", "_"), images, convert)
            out = Path(tmp) / ("run_" + data.name)
            command = [
                sys.executable, "-m", "ftkit", "run", "--task", "classification",
                "--model", "tv:resnet18", "--data", str(data), "--image-size", str(SIZE),
                "--strategy", "full", "--lr", "1e-3", "--epochs", str(args.epochs),
                "--batch-size", "16", "--no-augment", "--out", str(out),
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{name}: ftkit run failed: {done.stderr.strip()[-500:]}")
            summary = json.loads((out / "summary.json").read_text())
            best = summary["best"]["val_accuracy"]
            plan = json.loads((out / "plan.json").read_text())["preprocessing"]
            print(
                f"{name:18s} best val_accuracy {best:.3f}  "
                f"(mean {plan['mean'][0]:.4g}, std {plan['std'][0]:.4g})"
            )


if __name__ == "__main__":
    main()
