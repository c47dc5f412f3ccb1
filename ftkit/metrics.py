"""Validation metrics for segmentation and classification, built on one confusion matrix.

``update`` only accumulates counts on the inputs' device; every ratio is derived once in
``compute``. ``state`` is a single int64 tensor, so one ``all_reduce(SUM)`` merges ranks.

Classification also reports the expected calibration error (Guo et al. 2017, "On Calibration
of Modern Neural Networks"): the max softmax probability of each sample falls in one of 15
equal-width bins ``((b-1)/15, b/15]``, and ``ECE = sum_b n_b/N * |acc_b - conf_b|``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["ClassificationMetrics", "SegmentationMetrics"]


class _ConfusionMetrics:
    """Confusion-matrix accumulation shared by the task metrics (rows truth, cols prediction)."""

    # Counters a subclass keeps after the flattened matrix, so they are summed across ranks
    # by the same single all_reduce.
    _num_extra = 0

    def __init__(self, num_classes: int, device: torch.device | str | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        # With no device given the counters follow the inputs, so the caller needs no setup;
        # distributed runs should pass one so a rank that saw no batch still holds an
        # all_reduce-able tensor on the right device.
        self._follow_inputs = device is None
        self._state = torch.zeros(
            num_classes * num_classes + self._num_extra, dtype=torch.int64, device=device
        )

    @property
    def state(self) -> Tensor:
        """Every counter as one int64 tensor; ``dist.all_reduce(m.state)`` sums it in place."""
        return self._state

    def load_state(self, state: Tensor) -> None:
        if state.shape != self._state.shape:
            raise ValueError(
                f"state has shape {tuple(state.shape)}, expected {tuple(self._state.shape)}"
            )
        self._state.copy_(state)

    def reset(self) -> None:
        self._state.zero_()

    @property
    def confusion_matrix(self) -> Tensor:
        n = self.num_classes
        return self._state[: n * n].view(n, n)

    def _to_state_device(self, *tensors: Tensor) -> list[Tensor]:
        if self._follow_inputs and self._state.device != tensors[0].device:
            self._state = self._state.to(tensors[0].device)
        return [t.to(self._state.device, non_blocking=True) for t in tensors]

    def _accumulate(self, preds: Tensor, target: Tensor, ignore_index: int | None = None) -> None:
        n = self.num_classes
        # long() before arithmetic: uint8 masks would overflow n * t.
        t = target.reshape(-1).long()
        p = preds.reshape(-1).long()
        invalid = (t < 0) | (t >= n) | (p < 0) | (p >= n)
        index = n * t + p
        if ignore_index is not None:
            ignored = t == ignore_index
            invalid &= ~ignored
            index = torch.where(ignored, n * n, index)
        # Ignored entries land in bin n*n and invalid ones in bin n*n+1, which bincount only
        # allocates when such a value exists: the check reads a shape, not data, so it adds
        # no host sync to the happy path.
        index = torch.where(invalid, n * n + 1, index)
        counts = torch.bincount(index, minlength=n * n + 1)
        if counts.numel() > n * n + 1:
            raise ValueError(self._invalid_message(t, p, ignore_index))
        self._state[: n * n] += counts[: n * n]

    def _invalid_message(self, t: Tensor, p: Tensor, ignore_index: int | None) -> str:
        n = self.num_classes
        bad_t = (t < 0) | (t >= n)
        if ignore_index is not None:
            bad_t &= t != ignore_index
        if bad_t.any():
            allowed = f"[0, {n})" + ("" if ignore_index is None else f" or {ignore_index}")
            values = torch.unique(t[bad_t])[:5].tolist()
            return f"target values {values} are outside {allowed}"
        values = torch.unique(p[(p < 0) | (p >= n)])[:5].tolist()
        return f"prediction values {values} are outside [0, {n})"

    def _class_counts(self) -> tuple[list[list[int]], Tensor, Tensor, Tensor]:
        """The matrix as nested ints, plus float64 true positives, truth and prediction totals."""
        cm = self.confusion_matrix.cpu()
        cm_f = cm.double()
        return cm.tolist(), cm_f.diagonal(), cm_f.sum(dim=1), cm_f.sum(dim=0)


def _dice(tp: Tensor, truth: Tensor, predicted: Tensor) -> Tensor:
    # 0/0 gives nan for a class absent from both truth and prediction, which nanmean skips.
    return 2 * tp / (truth + predicted)


def _class_ids(preds: Tensor, target: Tensor, num_classes: int, what: str) -> Tensor:
    """Class ids from logits (argmax over dim 1) or from integer predictions."""
    if target.is_floating_point() or target.is_complex():
        raise ValueError(f"target must hold integer class ids, got dtype {target.dtype}")
    if preds.is_floating_point():
        if preds.dim() != target.dim() + 1 or preds.shape[1] != num_classes:
            raise ValueError(
                f"{what} logits must have shape (N, {num_classes}, ...) matching target "
                f"{tuple(target.shape)}, got {tuple(preds.shape)}"
            )
        preds = preds.argmax(dim=1)
    if preds.shape != target.shape:
        raise ValueError(
            f"predictions have shape {tuple(preds.shape)}, target {tuple(target.shape)}"
        )
    return preds


class SegmentationMetrics(_ConfusionMetrics):
    """mIoU, accuracy and Dice for semantic segmentation.

    Classes absent from both truth and prediction are left out of the means and reported as
    nan (as MMSegmentation does); a class only predicted counts with IoU 0.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(num_classes, device)
        self.ignore_index = ignore_index

    def update(self, preds_or_logits: Tensor, target: Tensor) -> None:
        """Add a batch: logits or probabilities (N, C, H, W) or class ids (N, H, W)."""
        # Argmax before any device move: class ids are C times smaller than the logits.
        preds = _class_ids(preds_or_logits, target, self.num_classes, "segmentation")
        preds, target = self._to_state_device(preds, target)
        self._accumulate(preds, target, self.ignore_index)

    def compute(self) -> dict[str, Any]:
        matrix, tp, truth, predicted = self._class_counts()
        iou = tp / (truth + predicted - tp)
        recall = tp / truth
        dice = _dice(tp, truth, predicted)
        return {
            "miou": float(iou.nanmean()),
            "iou_per_class": iou.tolist(),
            "pixel_accuracy": float(tp.sum() / truth.sum()),
            "mean_accuracy": float(recall.nanmean()),
            "accuracy_per_class": recall.tolist(),
            "dice": float(dice.nanmean()),
            "dice_per_class": dice.tolist(),
            "confusion_matrix": matrix,
        }


ECE_BINS = 15
# Confidences are summed in fixed point so the bins stay int64 counters in the one ``state``
# tensor: exact, order-free sums (the same ECE however batches and ranks split the samples).
# The unit 2**-24 is float32's resolution near 1 (float64 would fail on MPS), so a sample is
# off by at most 3e-8; int64 holds 5e11 samples at confidence 1 in one bin.
CONFIDENCE_UNIT = 2**24


class ClassificationMetrics(_ConfusionMetrics):
    """Accuracy, top-5 accuracy (from logits, when there are at least 5 classes), F1 and the
    expected calibration error (from logits)."""

    # Top-5 hits and the number of samples that came with logits to rank; then per ECE bin:
    # samples, correct ones, and their confidences summed in CONFIDENCE_UNITs.
    _num_extra = 2 + 3 * ECE_BINS

    def __init__(self, num_classes: int, device: torch.device | str | None = None) -> None:
        super().__init__(num_classes, device)
        self._has_top5 = num_classes >= 5

    def update(self, logits_or_preds: Tensor, target: Tensor) -> None:
        """Add a batch: logits (N, C) or class ids (N,)."""
        scores, target = self._to_state_device(logits_or_preds, target)
        preds = _class_ids(scores, target, self.num_classes, "classification")
        self._accumulate(preds, target)
        if self._has_top5 and scores.is_floating_point():
            top5 = scores.topk(5, dim=1).indices
            n = self.num_classes
            self._state[n * n] += (top5 == target.unsqueeze(1)).any(dim=1).sum()
            self._state[n * n + 1] += target.numel()
        if scores.is_floating_point():
            self._bin_confidences(scores, preds == target)

    def _bin_confidences(self, logits: Tensor, correct_ones: Tensor) -> None:
        confidence = logits.float().softmax(dim=1).amax(dim=1)
        # A non-finite logit has no confidence: left out of the bins, which makes the
        # ECE nan (fewer binned than scored) instead of a garbage integer.
        finite = confidence.isfinite()
        confidence, correct_ones = confidence[finite], correct_ones[finite]
        # bin b (from 0) holds (b/15, (b+1)/15], as Guo et al.'s
        bins = (confidence * ECE_BINS).ceil().long().clamp(1, ECE_BINS) - 1
        counts, correct, confidences = self._ece_state().unbind(0)
        counts.index_add_(0, bins, torch.ones_like(bins))
        correct.index_add_(0, bins, correct_ones.long())
        confidences.index_add_(0, bins, (confidence * CONFIDENCE_UNIT).round().long())

    def _ece_state(self) -> Tensor:
        """A (3, ECE_BINS) view of ``state``: samples, correct and confidence sums per bin."""
        n = self.num_classes
        return self._state[n * n + 2 :].view(3, ECE_BINS)

    def _ece(self, samples: float) -> float:
        counts, correct, confidences = self._ece_state().cpu().tolist()
        # Like top-5, nan unless every sample came with logits.
        if sum(counts) == 0 or sum(counts) != samples:
            return float("nan")
        # n_b/N * |acc_b - conf_b| = |correct_b - confidence sum_b| / N: integers until here
        gaps = sum(abs(c * CONFIDENCE_UNIT - s) for c, s in zip(correct, confidences, strict=True))
        return gaps / (sum(counts) * CONFIDENCE_UNIT)

    def compute(self) -> dict[str, Any]:
        matrix, tp, truth, predicted = self._class_counts()
        f1 = _dice(tp, truth, predicted)
        result: dict[str, Any] = {"accuracy": float(tp.sum() / truth.sum())}
        if self._has_top5:
            n = self.num_classes
            hits, scored = self._state[n * n : n * n + 2].tolist()
            # Top-5 over only the batches that came with logits would silently be a different
            # metric, so it is nan unless every sample was ranked.
            complete = scored > 0 and scored == truth.sum().item()
            result["top5"] = hits / scored if complete else float("nan")
        result["macro_f1"] = float(f1.nanmean())
        result["ece"] = self._ece(truth.sum().item())
        result["f1_per_class"] = f1.tolist()
        result["confusion_matrix"] = matrix
        return result
