"""Per-channel mean and std of a data set's images, in [0, 1] pixel units (as
``transforms.v2.ToDtype(torch.float32, scale=True)`` reads them), for
``--normalize dataset`` and the plan's check that the data looks like what
the weights were trained on."""

from __future__ import annotations

import torch

from ftkit.data.transforms import SampleDataset

Stats = tuple[tuple[float, ...], tuple[float, ...]]


def channel_statistics(dataset: object, limit: int | None = None) -> Stats | None:
    """Mean and std over every pixel of the first ``limit`` images (all by default)
    as their source yields them: before geometry, augmentation and normalisation,
    so the figures do not depend on either. None for data ftkit did not build."""
    if not isinstance(dataset, SampleDataset) or len(dataset) == 0:
        return None
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    pixels = 0
    for i in range(min(len(dataset), limit or len(dataset))):
        image = dataset.source.image(i)
        values = image.double() / 255 if image.dtype == torch.uint8 else image.double()
        flat = values.reshape(values.shape[0], -1)
        total += flat.sum(dim=1)
        squares += (flat * flat).sum(dim=1)
        pixels += flat.shape[1]
    mean = total / pixels
    std = (squares / pixels - mean * mean).clamp(min=0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def far_from(measured: Stats, expected: Stats) -> bool:
    """True when some channel's mean is more than its expected std away, or its
    spread is under a third or over three times the expected one: inputs the
    weights never saw (a 16-bit set using a tenth of its range, for one)."""
    for m, s, em, es in zip(*measured, *expected, strict=True):
        if abs(m - em) > es or not es / 3 <= s <= es * 3:
            return True
    return False
