"""One image or mask file, read as training will see it, or refused with a
line that names the file: EXIF orientation applied, every image mode turned
into RGB by the rules of ``to_rgb`` (deeper pixels kept as floats), masks of label ids only (a lossy
format is refused: compression noise invents labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as F

from ftkit.errors import UsageError

ORIENTATION = 0x0112  # the EXIF tag
# PIL converts these to RGB without losing the picture. Alpha (RGBA, LA, PA, a
# palette's transparency) is discarded, not composited: the colours are kept as
# stored, rather than blended with a background the image never had.
RGB_MODES = frozenset(
    {"1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "LA", "La", "PA", "CMYK", "YCbCr"}
)


def read_mask(path: Path, image: Path, image_size: tuple[int, int]) -> np.ndarray:
    try:
        with Image.open(path) as im:
            mode, lossy = im.mode, lossy_format(im, path)
            # Oriented as its image is, so both are compared as a viewer shows them.
            mask = np.array(ImageOps.exif_transpose(im))
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... on bad files
        raise UsageError(
            f"cannot read mask '{path}' ({reason(exc)}); expected a PNG of label ids"
        ) from exc
    if lossy:
        raise UsageError(
            f"mask '{path}' is a lossy {lossy}: compression noise invents labels; "
            f"expected a PNG of label ids"
        )
    if mask.ndim != 2 or mode == "F":
        raise UsageError(
            f"mask '{path}' has mode {mode}; expected a single-channel PNG of label ids "
            f"(mode L or P)"
        )
    height, width = mask.shape
    if (width, height) != image_size:
        raise UsageError(
            f"mask '{path}' is {width}x{height} but image '{image}' is "
            f"{image_size[0]}x{image_size[1]}; expected the same size"
        )
    if mask.dtype == np.uint8:
        return mask
    # L, P and 1 modes give uint8/bool; I and I;16 masks may hold larger ids.
    return mask.astype(np.uint8 if mask.dtype == np.bool_ else np.int32)


def lossy_format(im: Image.Image, path: Path) -> str | None:
    """The name of ``im``'s format when it stores pixels lossily, else None.
    Judged by the content, not the file name."""
    if im.format in ("JPEG", "MPO"):
        return "JPEG"
    if im.format == "TIFF" and im.info.get("compression") in ("jpeg", "tiff_jpeg"):
        return "JPEG-compressed TIFF"
    if im.format == "WEBP" and webp_is_lossy(path):
        return "WebP"
    return None


def webp_is_lossy(path: Path) -> bool:
    # A WebP's bitstream chunk is 'VP8 ' (lossy) or 'VP8L' (lossless); extended
    # files ('VP8X') hold one of them after other chunks.
    data = path.read_bytes()
    at = 12  # after 'RIFF', the size and 'WEBP'
    while at + 8 <= len(data):
        kind = data[at : at + 4]
        if kind in (b"VP8 ", b"VP8L"):
            return kind == b"VP8 "
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        at += 8 + size + size % 2
    return False


def check_image(path: Path, image_size: int) -> tuple[int, int]:
    """Decode ``path`` once, as training will, so a broken file or an image mode
    ftkit cannot convert fails now, not mid-epoch; its (w, h) once oriented."""
    size = decode(path, draft=image_size)[1]
    assert size is not None
    return size


def decode(path: Path, draft: int | None = None) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """The (3, H, W) pixels of ``path`` (see ``to_rgb``) as a viewer shows them and, for the
    check with ``draft``, its oriented (w, h) at full size. ``draft`` lets JPEGs
    decode at a reduced scale: much faster, and still reads every byte."""
    try:
        with Image.open(path) as im:
            size = oriented_size(im) if draft else None  # training reads need no size
            if draft:
                im.draft("RGB", (draft, draft))
            im.load()
            pixels = to_rgb(ImageOps.exif_transpose(im), path)
    except UsageError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... on bad files
        raise UsageError(
            f"cannot read image '{path}' ({reason(exc)}); expected a complete image file"
        ) from exc
    return pixels, size


def oriented_size(im: Image.Image) -> tuple[int, int]:
    # EXIF orientations 5-8 turn the picture by 90 degrees (what exif_transpose does).
    width, height = im.size
    return (height, width) if im.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8) else (width, height)


def to_rgb(im: Image.Image, path: Path) -> torch.Tensor:
    """(3, H, W) pixels of ``im``, or a UsageError naming ``path`` and its mode.

    8-bit modes go through PIL to uint8 RGB (alpha discarded, see ``RGB_MODES``).
    Deeper pixels keep their precision as float32 in [0, 1], as
    ``transforms.v2.ToDtype(torch.float32, scale=True)`` reads integers: 16-bit
    greyscale (I;16*) is divided by 65535, so two values one step apart stay two
    inputs; mode I (32-bit) is read as 16-bit, since 16-bit PNGs and TIFFs open as
    I, and refused outside 0..65535. Float (F) must hold values in [0, 1], kept as
    they are: any other range has no meaning ftkit can know, and stretching each
    image by its own min and max would make the same value a different grey in
    every image.
    """
    mode = im.mode
    if mode in RGB_MODES:
        return F.pil_to_tensor(im.convert("RGB"))
    values = np.asarray(im)
    if mode.startswith("I;16") or mode == "I":
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            raise UsageError(
                f"image '{path}' has mode {mode} with values {low}..{high}; expected "
                f"16-bit values 0..65535, or an 8-bit image"
            )
        grey = values.astype(np.float32) / np.float32(65535)
    elif mode == "F":
        lo, hi = float(values.min()), float(values.max())
        if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
            raise UsageError(
                f"image '{path}' has mode F (float) with values {lo:g}..{hi:g}; expected "
                f"floats in [0, 1], or an 8- or 16-bit image"
            )
        grey = values.astype(np.float32)
    else:
        raise UsageError(
            f"image '{path}' has mode {mode}, which ftkit cannot convert to RGB; expected "
            f"an 8- or 16-bit greyscale, palette, RGB(A) or CMYK image"
        )
    return torch.from_numpy(np.ascontiguousarray(grey)).expand(3, -1, -1).contiguous()


def reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
