"""Datasets read from folders (one module over 400 lines, knowingly: every
layout of both tasks shares the same discovery, split and check helpers).

Segmentation, one of:

- ``images/`` and ``masks/``, matched by file stem, split into train/val;
- ``train/`` and ``val/``, each holding ``images/`` and ``masks/``;
- Pascal VOC: ``JPEGImages/``, ``SegmentationClass/`` and
  ``ImageSets/Segmentation/{train,val}.txt``.

Masks are single-channel PNGs (mode L or P, as in VOC) whose values are the
class ids; 255 means "ignore". A mask in a lossy format (JPEG, lossy WebP,
JPEG-compressed TIFF) is refused: compression noise invents labels. The number
of classes is the caller's, else the length of ``classes.txt``, else the
largest label + 1; that last guess is refused when a label covers under
``RARE_LABEL_FRACTION`` of the labelled pixels (likely noise, not a class).

Classification, ImageFolder style: ``CLASS/*.png`` folders split into
train/val, or ``train/CLASS/`` and ``val/CLASS/``. Classes are sorted by name
unless ``classes.txt`` gives their order.

``classes.txt`` (optional, at the top) lists the class names in label order,
one a line. Folders without train/ and val/ are split by ``val_fraction`` and a
hash of each image's path inside the folder (``split_key``), not by a seed: a
baseline and its fine-tuned model see the same validation images, and files
added later land on one side without moving any other.

Building a dataset lists files and pairs them, and reads nothing else: what a
run needs to know of each sample up front (its size, its mask's labels, that
its files decode, so a broken file stops the run before training, naming the
file) comes from the folder's index (``ftkit.data.index``: computed once per
state of the files, in parallel, cached on disk). Images are shown to the model
as a viewer shows them: EXIF orientation applied (masks are compared with the
oriented size), every mode converted to RGB by the rules of ``to_rgb`` (16-bit
and float images keep their precision), or refused. With ``resize="keep"``
(``--resize``, the default) images and masks are yielded at their own size, for
``SampleDataset``'s ratio-keeping geometry; with ``"squash"`` they are resized
to ``image_size`` squares here (masks with nearest neighbour) and scored at that
size. Images and masks are read from disk on each use; per sample only paths,
its size and its class id (or its mask's label pixel counts) stay in memory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, TypeVar

import torch

from ftkit.data.images import decode, read_mask
from ftkit.data.index import Facts, LabelPixels, index_folder, relative_posix
from ftkit.data.splits import DataSplits
from ftkit.data.transforms import (
    IGNORE_INDEX,
    SampleDataset,
    TrainCrop,
    resize_image,
    resize_mask,
)
from ftkit.errors import UsageError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
CLASSES_FILE = "classes.txt"
# An inferred label covering under 0.01% of the labelled pixels is taken for noise.
RARE_LABEL_FRACTION = 1e-4
SPLITS = ("train", "val")
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

Pair = tuple[Path, Path]
T = TypeVar("T")


RESIZES = ("keep", "squash")


class FolderSource:
    """Samples read from their files on each use. ``squash_to``: the square side
    images (and masks) are resized to here, or None to yield them at their own
    (height, width), which ``sizes`` lists. Segmentation: ``masks`` and
    ``pixels``, each mask's label histogram as ``target`` yields it (squashed or
    not); classification: ``targets``, the class ids."""

    def __init__(
        self,
        images: list[Path],
        sizes: list[tuple[int, int]],
        squash_to: int | None,
        *,
        masks: list[Path] | None = None,
        pixels: LabelPixels | None = None,
        targets: list[int] | None = None,
    ) -> None:
        self.images = images
        self.sizes = sizes
        self.squash_to = squash_to
        self.masks = masks
        self.pixels = pixels
        self.targets = targets

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> torch.Tensor:
        pixels, _ = decode(self.images[index])
        return pixels if self.squash_to is None else resize_image(pixels, self.squash_to)

    def target(self, index: int) -> torch.Tensor:
        if self.masks is None:
            assert self.targets is not None
            return torch.tensor(self.targets[index], dtype=torch.int64)
        height, width = self.sizes[index]
        mask = torch.from_numpy(read_mask(self.masks[index], self.images[index], (width, height)))
        return (mask if self.squash_to is None else resize_mask(mask, self.squash_to)).long()

    def label_counts(self, num_classes: int) -> list[int]:
        """Per-class pixels (segmentation, 255 left out) or samples over all the
        targets, without reading a file; see ``count_labels``."""
        if self.pixels is not None:
            return self.pixels.totals(num_classes)
        assert self.targets is not None
        counts = [0] * num_classes
        for label in self.targets:
            counts[label] += 1
        return counts

    def move(self, indices: list[int], to: FolderSource) -> None:
        """Samples ``indices`` (ascending) to the end of ``to``, last first."""
        moving, gone = indices[::-1], set(indices)
        kept = [i for i in range(len(self)) if i not in gone]
        for name in ("images", "sizes", "masks", "targets"):
            mine, theirs = getattr(self, name), getattr(to, name)
            if mine is not None:
                theirs.extend(mine[i] for i in moving)
                setattr(self, name, [mine[i] for i in kept])
        if self.pixels is not None and to.pixels is not None:
            to.pixels = to.pixels + self.pixels.take(moving)
            self.pixels = self.pixels.take(kept)


def load_folder(
    root: Path,
    task: str,
    *,
    image_size: int,
    val_fraction: float = 0.2,
    num_classes: int | None = None,
    resize: str = "keep",
    crop: TrainCrop | None = None,
) -> DataSplits:
    """``crop``: segmentation training's ``--crop`` (with ``resize="keep"`` only)."""
    if not root.is_dir():
        raise UsageError(f"dataset '{root}' is not a folder; expected builtin:NAME or a folder")
    if not 0 < val_fraction < 1:
        raise UsageError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if resize not in RESIZES:
        raise UsageError(f"--resize must be one of {', '.join(RESIZES)}, got '{resize}'")
    if crop is not None and (task != "segmentation" or resize != "keep"):
        raise UsageError(
            "--crop is segmentation training's crop of images that keep their ratio; "
            "classification crops with --augment crop(...), --resize squash does not crop"
        )
    listed = _read_class_names(root)
    if task == "segmentation":
        return _segmentation(root, listed, image_size, val_fraction, num_classes, resize, crop)
    return _classification(root, listed, image_size, val_fraction, num_classes, resize)


def _dataset(
    task: str, source: FolderSource, image_size: int, crop: TrainCrop | None
) -> SampleDataset:
    base = None if source.squash_to is not None else image_size
    return SampleDataset(source, task, base_size=base, crop=crop)


# --- segmentation -------------------------------------------------------------


def _segmentation(
    root: Path,
    listed: list[str] | None,
    image_size: int,
    val_fraction: float,
    num_classes: int | None,
    resize: str,
    crop: TrainCrop | None,
) -> DataSplits:
    default_names: list[str] = []
    if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
        pairs = {split: _voc_pairs(root, split) for split in SPLITS}
        default_names = list(VOC_CLASSES)
    elif _has_splits(root):
        for split in SPLITS:
            if not _segmentation_folders(root / split) and _class_folders_with_images(root / split):
                raise UsageError(
                    f"'{root}' looks like a classification dataset ({split}/ holds a folder "
                    f"of images per class); use --task classification"
                )
        pairs = {split: _paired(root / split) for split in SPLITS}
        for split, found in pairs.items():
            if not found:
                raise UsageError(
                    f"split '{split}' of '{root}' has no samples; expected images in "
                    f"'{root / split / 'images'}'"
                )
    elif (root / "images").is_dir() or (root / "masks").is_dir():
        found = _paired(root)
        if not found:
            raise UsageError(f"dataset '{root}' is empty; expected images in '{root / 'images'}'")
        pairs = dict(zip(SPLITS, _split(found, val_fraction, root), strict=True))
    elif _class_folders_with_images(root):
        raise UsageError(
            f"'{root}' looks like a classification dataset (a folder of images per class); "
            f"use --task classification"
        )
    else:
        raise UsageError(
            f"'{root}' is not a segmentation dataset; expected images/ and masks/, "
            f"train/ and val/ each with images/ and masks/, or Pascal VOC folders "
            f"(JPEGImages/, SegmentationClass/)"
        )

    # Every image decoded and every mask read once per state of the files, so
    # bad files fail before training.
    squash_to = image_size if resize == "squash" else None
    samples = [pair for split in SPLITS for pair in pairs[split]]
    facts = index_folder(root, "segmentation", samples, image_size=image_size, squash_to=squash_to)
    by_split: dict[str, list[Facts]] = {"train": facts[: len(pairs["train"])]}
    by_split["val"] = facts[len(pairs["train"]) :]
    labels: list[tuple[Path, list[int]]] = []
    pixels: dict[int, int] = {}  # label -> pixels at full size, over all masks
    for (_, mask_path), fact in zip(samples, facts, strict=True):
        assert fact.labels is not None
        values, counts = fact.labels
        labels.append((mask_path, values))
        for value, count in zip(values, counts, strict=True):
            pixels[value] = pixels.get(value, 0) + count

    if num_classes is None:
        known = listed or default_names
        num_classes = len(known) if known else _infer_num_classes(pixels, root)
    elif listed and num_classes < len(listed):
        raise UsageError(
            f"--num-classes {num_classes} is fewer than the {len(listed)} classes "
            f"listed in '{root / CLASSES_FILE}'"
        )
    elif listed and num_classes > len(listed):
        _refuse_phantoms(num_classes, len(listed), f"listed in '{root / CLASSES_FILE}'")
    elif not listed:  # VOC's 21 names may be cut to the labels used, never widened
        labelled = max((v for v in pixels if v != IGNORE_INDEX), default=-1) + 1
        if num_classes > labelled:
            _refuse_phantoms(num_classes, labelled, f"that the masks of '{root}' hold")
    for mask_path, values in labels:
        bad = [v for v in values if (v >= num_classes or v < 0) and v != IGNORE_INDEX]
        if bad:
            raise UsageError(
                f"mask '{mask_path}' has label {bad[-1]}, but there are {num_classes} "
                f"classes; expected labels 0..{num_classes - 1} or {IGNORE_INDEX} (ignore)"
            )
    names = _pad_names((listed or default_names)[:num_classes], num_classes)
    train, val = (
        _dataset(
            "segmentation",
            FolderSource(
                [image for image, _ in pairs[s]],
                [(f.size[1], f.size[0]) for f in by_split[s]],
                squash_to,
                masks=[mask for _, mask in pairs[s]],
                pixels=LabelPixels(
                    (f.squashed if squash_to is not None else f.labels)  # type: ignore[misc]
                    for f in by_split[s]
                ),
            ),
            image_size,
            crop,
        )
        for s in SPLITS
    )
    return DataSplits("segmentation", train, val, num_classes, names)


def _paired(folder: Path) -> list[Pair]:
    """Images of ``folder/images`` with their masks of the same stem in ``folder/masks``."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    for needed in (images_dir, masks_dir):
        if not needed.is_dir():
            raise UsageError(f"'{needed}' not found; expected images/ and masks/ in '{folder}'")
    masks = _by_stem(_image_files(masks_dir))
    pairs = []
    for stem, image in _by_stem(_image_files(images_dir)).items():
        mask = masks.pop(stem, None)
        if mask is None:
            raise UsageError(f"image '{image}' has no mask; expected '{masks_dir / stem}.png'")
        pairs.append((image, mask))
    if masks:
        orphan = next(iter(masks.values()))
        raise UsageError(
            f"mask '{orphan}' has no image; expected an image named '{orphan.stem}' "
            f"in '{images_dir}'"
        )
    return pairs


def _voc_pairs(root: Path, split: str) -> list[Pair]:
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise UsageError(
            f"'{listing}' not found; a Pascal VOC folder needs ImageSets/Segmentation/"
            f"train.txt and val.txt listing image names"
        )
    stems = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if not stems:
        raise UsageError(f"split '{split}' of '{root}' has no samples; '{listing}' is empty")
    pairs = []
    for stem in stems:
        image = root / "JPEGImages" / f"{stem}.jpg"
        mask = root / "SegmentationClass" / f"{stem}.png"
        if not image.is_file():
            raise UsageError(f"'{listing}' lists '{stem}' but image '{image}' is missing")
        if not mask.is_file():
            raise UsageError(f"image '{image}' has no mask; expected '{mask}'")
        pairs.append((image, mask))
    return pairs


def _refuse_phantoms(num_classes: int, known: int, where: str) -> None:
    """More classes than the data has would average classes no image holds (IoU 0)
    into every mean: a silently lower score."""
    phantom = ", ".join(str(i) for i in range(known, num_classes))
    raise UsageError(
        f"--num-classes {num_classes} is more than the {known} classes {where}; no "
        f"image holds class(es) {phantom}: list them in {CLASSES_FILE}, or drop --num-classes"
    )


def _infer_num_classes(pixels: dict[int, int], root: Path) -> int:
    """The largest label + 1, unless a label is so rare that it is likely noise:
    then the guess would give the model classes that are not there. That is an
    error, not a warning: a warning scrolls by while a run trains a wrong head,
    and a real rare class costs one option (--num-classes or classes.txt)."""
    found = {v: n for v, n in pixels.items() if v != IGNORE_INDEX}
    if not found:
        raise UsageError(
            f"the masks of '{root}' hold no labels other than {IGNORE_INDEX} (ignore); "
            f"expected class ids 0, 1, ..."
        )
    if max(found) == 0:
        raise UsageError(
            f"the masks of '{root}' hold only label 0; expected at least two classes "
            f"(or pass the number of classes)"
        )
    total = sum(found.values())
    rare = sorted(v for v, n in found.items() if n < total * RARE_LABEL_FRACTION)
    if rare:
        listing = ", ".join(f"{v} ({found[v]} px)" for v in rare)
        raise UsageError(
            f"the masks of '{root}' hold label(s) {listing} in under "
            f"{RARE_LABEL_FRACTION:.2%} of the {total} labelled pixels, likely noise; "
            f"fix the masks, or pass --num-classes or list the classes in "
            f"'{root / CLASSES_FILE}' to keep them"
        )
    return max(found) + 1


# --- classification -----------------------------------------------------------


def _classification(
    root: Path,
    listed: list[str] | None,
    image_size: int,
    val_fraction: float,
    num_classes: int | None,
    resize: str,
) -> DataSplits:
    # Else the folders images/ and masks/ would silently become two classes.
    splits_present = _has_splits(root)
    folders_to_check = [root / split for split in SPLITS] if splits_present else [root]
    if any(_segmentation_folders(folder) for folder in folders_to_check):
        inside = " in train/ and val/" if splits_present else ""
        raise UsageError(
            f"'{root}' looks like a segmentation dataset (images/ and masks/{inside}); "
            f"use --task segmentation, or give one folder of images per class"
        )
    if splits_present:
        folders = {split: _class_folders(root / split) for split in SPLITS}
        found = sorted(set(folders["train"]) | set(folders["val"]))
    else:
        folders = {"all": _class_folders(root)}
        found = sorted(folders["all"])
    if not found:
        raise UsageError(
            f"'{root}' has no class folders; expected one folder of images per class "
            f"('{root}/CLASS/*.png'), or train/CLASS/ and val/CLASS/"
        )
    names = listed or found
    for split, split_folders in folders.items():
        for name in split_folders:
            if name not in names:
                where = root if split == "all" else root / split
                raise UsageError(
                    f"class folder '{where / name}' is not listed in '{root / CLASSES_FILE}'"
                )
    if len(names) < 2:
        raise UsageError(
            f"'{root}' has only one class ('{names[0]}'); classification needs at least "
            f"two class folders"
        )
    if num_classes is not None and num_classes < len(names):
        raise UsageError(
            f"--num-classes {num_classes} is fewer than the {len(names)} classes of "
            f"'{root}' ({', '.join(names)})"
        )
    if num_classes is not None and num_classes > len(names):
        _refuse_phantoms(num_classes, len(names), f"of '{root}' ({', '.join(names)})")

    def samples(split_folders: dict[str, list[Path]]) -> list[tuple[Path, int]]:
        return [(f, names.index(c)) for c, files in split_folders.items() for f in files]

    if "all" in folders:
        everything = samples(folders["all"])
        if not everything:
            raise UsageError(f"dataset '{root}' is empty; expected images in '{root}/CLASS/'")
        splits = dict(zip(SPLITS, _split(everything, val_fraction, root), strict=True))
    else:
        splits = {split: samples(folders[split]) for split in SPLITS}
        for split, items in splits.items():
            if not items:
                raise UsageError(
                    f"split '{split}' of '{root}' has no samples; expected images in "
                    f"'{root / split}/CLASS/'"
                )
    images: list[tuple[Path, Path | None]] = [(f, None) for s in SPLITS for f, _ in splits[s]]
    facts = index_folder(root, "classification", images, image_size=image_size)
    sizes = {"train": [(h, w) for w, h in (f.size for f in facts[: len(splits["train"])])]}
    sizes["val"] = [(h, w) for w, h in (f.size for f in facts[len(splits["train"]) :])]
    squash_to = image_size if resize == "squash" else None
    train, val = (
        _dataset(
            "classification",
            FolderSource(
                [image for image, _ in splits[s]],
                sizes[s],
                squash_to,
                targets=[label for _, label in splits[s]],
            ),
            image_size,
            None,
        )
        for s in SPLITS
    )
    n = num_classes or len(names)
    return DataSplits("classification", train, val, n, _pad_names(names, n))


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    if not folder.is_dir():
        raise UsageError(f"'{folder}' not found; expected train/ and val/ with class folders")
    classes = {}
    for d in sorted(folder.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            found = list(d.rglob("*"))
            for f in found:
                _check_link(f)
            classes[d.name] = sorted(f for f in found if _is_image(f))
            if not classes[d.name]:
                raise UsageError(
                    f"class folder '{d}' holds no images; expected at least one "
                    f"({', '.join(sorted(IMAGE_SUFFIXES))}), or no such folder"
                )
    return classes


# --- shared -------------------------------------------------------------------


def _segmentation_folders(folder: Path) -> bool:
    return any((folder / d).is_dir() for d in ("images", "masks", "JPEGImages"))


def _class_folders_with_images(folder: Path) -> bool:
    """True when ``folder`` holds a sub-folder with images: an ImageFolder layout."""
    return folder.is_dir() and any(
        d.is_dir() and not d.name.startswith(".") and any(_is_image(f) for f in d.rglob("*"))
        for d in folder.iterdir()
    )


def has_own_split(root: Path) -> bool:
    """True when the folder says itself which images are validation ones."""
    voc = (root / "ImageSets" / "Segmentation").is_dir()
    return voc or all((root / split).is_dir() for split in SPLITS)


def _has_splits(root: Path) -> bool:
    present = [(root / split).is_dir() for split in SPLITS]
    if any(present) and not all(present):
        have, missing = SPLITS if present[0] else SPLITS[::-1]
        raise UsageError(
            f"'{root}' has {have}/ but no {missing}/; expected both train/ and val/, "
            f"or neither (then val is split off by val_fraction)"
        )
    return all(present)


def _split(items: list[T], val_fraction: float, root: Path) -> tuple[list[T], list[T]]:
    """Train and val by ``split_key``: a file is held out when the hash of its path
    relative to ``root`` falls under ``val_fraction``. No other file decides its side,
    so files added later (or removed) move none of the others: a baseline's training
    images never become its fine-tune's validation images. Classes are stratified in
    expectation (each file is one independent draw), not to the exact count."""
    n = len(items)
    if n < 2:
        raise UsageError(
            f"dataset '{root}' has {n} sample(s), too few to split off a validation set "
            f"(val_fraction {val_fraction}); expected at least 2, or train/ and val/ folders"
        )
    keys = [split_key(_image_of(item), root) for item in items]
    val = {i for i, k in enumerate(keys) if k < val_fraction}
    # A tiny folder may draw no side at all: the extreme hash goes over (still stable
    # until a file with a more extreme hash arrives).
    if not val:
        val = {min(range(n), key=keys.__getitem__)}
    elif len(val) == n:
        val.discard(max(range(n), key=keys.__getitem__))
    return [x for i, x in enumerate(items) if i not in val], [items[i] for i in sorted(val)]


def split_key(image: Path, root: Path) -> float:
    """A number in [0, 1) fixed by the image's path inside the dataset folder."""
    relative = relative_posix(image, root)
    digest = hashlib.sha256(relative.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _image_of(item: Any) -> Path:
    return item[0]  # a (image, mask) pair or an (image, label) sample


def _read_class_names(root: Path) -> list[str] | None:
    path = root / CLASSES_FILE
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names or len(set(names)) != len(names):
        raise UsageError(f"'{path}' must list distinct class names, one a line, in label order")
    return names


def _image_files(folder: Path) -> list[Path]:
    """The images of ``folder``, sorted. ``os.scandir`` knows each entry's type
    from the directory listing: no stat per file (50,000 stats cost a second)."""
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            suffix = os.path.splitext(entry.name)[1].lower()  # what Path.suffix says
            if suffix not in IMAGE_SUFFIXES:
                continue
            if entry.is_symlink():
                _check_link(Path(entry.path))
            if entry.is_file() and not entry.name.startswith("."):
                names.append(entry.name)
    return [folder / name for name in sorted(names)]  # the order of sorted(paths)


def _check_link(path: Path) -> None:
    """An image name that leads nowhere is an error, not a file quietly left out."""
    if path.suffix.lower() in IMAGE_SUFFIXES and path.is_symlink() and not path.exists():
        raise UsageError(
            f"'{path}' is a symlink that leads nowhere (broken, or a loop); expected an image"
        )


def _is_image(path: Path) -> bool:
    return (
        path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def _by_stem(files: list[Path]) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    for f in files:
        if f.stem in by_stem:
            raise UsageError(f"'{by_stem[f.stem]}' and '{f}' share a name; expected one per stem")
        by_stem[f.stem] = f
    return by_stem


def _pad_names(names: list[str], num_classes: int) -> list[str]:
    return [*names, *(f"class_{i}" for i in range(len(names), num_classes))]


# --- the split a run records --------------------------------------------------

SPLIT_FILE = "split.json"  # in a run directory: which files trained, which were scored


def split_record(splits: DataSplits, root: Path) -> dict[str, Any] | None:
    """The files of each split, relative to the data folder; None for data that is not
    ftkit's own folder reading."""
    files = {s: getattr(getattr(splits, s), "source", None) for s in SPLITS}
    if not all(isinstance(f, FolderSource) for f in files.values()):
        return None
    return {
        s: sorted(p.relative_to(root).as_posix() for p in f.images)  # type: ignore[union-attr]
        for s, f in files.items()
    }


def hold_back_added(splits: DataSplits, root: Path, record: dict[str, Any]) -> list[str]:
    """Move the validation files that ``record`` (a baseline's split) does not know
    into training: a fine-tune is scored on its baseline's validation images only, so
    its epoch 0 and its baseline guard compare like with like. The moved files."""
    train, val = splits.train.source, splits.val.source  # type: ignore[attr-defined]
    if not isinstance(train, FolderSource) or not isinstance(val, FolderSource):
        return []
    known = set(record.get("train", [])) | set(record.get("val", []))
    added = [i for i, p in enumerate(val.images) if p.relative_to(root).as_posix() not in known]
    if len(added) == len(val.images):  # nothing in common: another data set, not a grown one
        return []
    val.move(added, train)
    moved = train.images[len(train.images) - len(added) :]
    return sorted(p.relative_to(root).as_posix() for p in moved)
