"""``--eval-mode slide``: a segmentation model applied to windows of the crop
size that slide over the image, as MMSegmentation's ``slide_inference`` does:
a grid of windows at a stride of two thirds of the window, the last window of
each row and column moved back inside the image, and every pixel given the mean
of the logits of exactly the windows that cover it. An image no larger than a
window is one window: the model on the whole image."""

from __future__ import annotations

import torch
from torch import nn


def starts(size: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The (start, end) of each window along one side of ``size`` pixels."""
    count = max(size - window + stride - 1, 0) // stride + 1
    spans = []
    for i in range(count):
        end = min(i * stride + window, size)
        spans.append((max(end - window, 0), end))
    return spans


class SlidingWindow(nn.Module):
    def __init__(self, model: nn.Module, window: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.window = window
        self.stride = tuple(max(1, -(-2 * w // 3)) for w in window)  # ceil(2w/3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        total: torch.Tensor | None = None
        count = torch.zeros((1, 1, height, width), device=x.device)
        for top, bottom in starts(height, self.window[0], self.stride[0]):
            for left, right in starts(width, self.window[1], self.stride[1]):
                logits = self.model(x[..., top:bottom, left:right]).float()
                if total is None:
                    total = x.new_zeros((x.shape[0], logits.shape[1], height, width)).float()
                total[..., top:bottom, left:right] += logits
                count[..., top:bottom, left:right] += 1
        assert total is not None
        return total / count
