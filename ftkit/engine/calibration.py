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
  sigmoid-based focal loss included) (``engine/loop.py``, ``predict``).
- The text output ends with a per-class table (each class's metrics and its
  support: images, or truth pixels); ``--plot FILE`` draws the confusion
  matrix (counts in the cells, colour the share of the true class).
- ``--calibrate`` (classification only) keeps the validation logits, fits T
  by minimising their NLL (LBFGS on log T, so T stays positive), reports ECE
  and NLL before and after, and writes ``RUN_DIR/calibration.json`` with the
  weights' sha256 and the ``--tta`` it was fitted with. A later ``ftkit eval``
  of the same weights with the same ``--tta`` reports ``temperature`` and
  ``ece_calibrated``.
- T is fitted and judged on the same validation split: ``ece_calibrated`` is
  an in-sample, optimistic figure (one parameter overfits little on hundreds
  of samples, but judge it on held-out data before relying on it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ftkit.metrics import ClassificationMetrics


def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The T > 0 that minimises the mean NLL of ``softmax(logits / T)``."""
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
    if not 0 < temperature < float("inf"):
        raise ValueError(f"temperature scaling did not converge (T = {temperature})")
    return temperature


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
