"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural
Networks"): one T > 0 that divides a classifier's logits. It changes no
prediction, only how sure each one is: T > 1 softens an over-confident model.

Evaluation, as ``ftkit eval`` does it
-------------------------------------
- Every classification epoch records ``val_ece``, the expected calibration
  error: 15 equal-width bins of the max softmax probability,
  ``ECE = sum_b n_b/N * |acc_b - conf_b|`` (``ftkit.metrics``). Lower is better.
- ``--tta flip`` averages the softmax over the image and its left-right flip
  (a segmentation output flipped back first); metrics and ECE judge that
  average, the loss is each view's own averaged (right for any loss, a
  sigmoid-based focal loss included) (``engine/train/loop.py``, ``predict``).
- The text output ends with a per-class table (each class's metrics and its
  support: images, or truth pixels); ``--plot FILE`` draws the confusion
  matrix (counts in the cells, colour the share of the true class).
- ``--calibrate`` (classification only) keeps the validation logits, fits T
  by minimising their NLL (LBFGS on log T, so T stays positive), reports ECE
  and NLL before and after, and writes ``RUN_DIR/calibration.json`` with the
  weights' sha256 and the ``--tta`` it was fitted with. A later ``ftkit eval``
  of the same weights with the same ``--tta`` reports ``temperature`` and
  ``ece_calibrated``.
- T is bounded to [0.05, 20] (``T_RANGE``). A model that needs more than 20
  has logits that carry no confidence (T -> infinity makes every probability
  1/C, a "perfect" ECE of a useless model); one that needs under 0.05 is 20x
  under-confident, beyond what one scalar should fix. A T at a bound, or a
  calibrated NLL no better than chance's (ln C) or than the uncalibrated
  one, is reported with a warning and never stored.
- T is fitted and judged on the same validation split: ``ece_calibrated`` is
  an in-sample, optimistic figure (one parameter overfits little on hundreds
  of samples, but judge it on held-out data before relying on it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ftkit.metrics import ClassificationMetrics

T_RANGE = (0.05, 20.0)  # why these bounds: the module docstring


def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The T in ``T_RANGE`` that minimises the mean NLL of ``softmax(logits / T)``."""
    # clone: logits kept under inference_mode cannot take part in autograd
    logits, target = logits.detach().double().clone(), target.detach().long().clone()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # from T = 1
    optimizer = torch.optim.LBFGS(
        [log_t], lr=1.0, max_iter=100, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), target)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if math.isnan(temperature):
        raise ValueError(f"temperature scaling did not converge (T = {temperature})")
    # The NLL is convex in 1/T, so its minimum over the range is the nearest bound.
    return min(max(temperature, T_RANGE[0]), T_RANGE[1])


def doubts(figures: dict[str, float], temperature: float, num_classes: int) -> list[str]:
    """Why a fitted T is not worth keeping; empty when it is."""
    found = []
    if temperature in T_RANGE:
        found.append(
            f"T = {temperature:g} is at the bound of {T_RANGE[0]:g}..{T_RANGE[1]:g}: "
            "the logits carry little confidence signal to scale"
        )
    chance = math.log(num_classes)
    if figures["nll_after"] >= chance - 1e-6:
        found.append(
            f"the calibrated NLL {figures['nll_after']:.4f} is no better than chance's "
            f"(ln {num_classes} = {chance:.4f})"
        )
    if figures["nll_after"] > figures["nll_before"] + 1e-9:
        found.append(
            f"the calibrated NLL {figures['nll_after']:.4f} is worse than the "
            f"uncalibrated {figures['nll_before']:.4f}"
        )
    return found


def ece(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The expected calibration error, exactly as every epoch's ``val_ece``."""
    metrics = ClassificationMetrics(logits.shape[1])
    metrics.update(logits.float(), target)
    return float(metrics.compute()["ece"])


def nll(logits: torch.Tensor, target: torch.Tensor) -> float:
    return float(F.cross_entropy(logits.double(), target.long()))


def calibrated(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> dict:
    """ECE and NLL of ``logits`` as they are and divided by ``temperature``."""
    scaled = logits.double() / temperature
    return {
        "ece_before": ece(logits, target),
        "ece_after": ece(scaled, target),
        "nll_before": nll(logits, target),
        "nll_after": nll(scaled, target),
    }
