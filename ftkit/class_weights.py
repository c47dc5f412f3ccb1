"""``--class-weights``: a mode computed from the training labels (``auto``,
``inverse``, ``median``), a comma list, or a JSON/text file of one weight per
class. Torch-free: ``ftkit plan`` checks the option."""

from __future__ import annotations

import difflib
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftkit.errors import UsageError, unknown

CLASS_WEIGHT_MODES = ("auto", "inverse", "median")
AUTO_MAX_WEIGHT = 10.0


def class_weights(mode: str, pixel_counts: Sequence[int]) -> list[float]:
    """Per-class loss weights from label counts (pixels, or images for classification).

    - ``inverse``: ``total / (C * count_c)``, so a class at its fair share ``1/C`` gets 1.
    - ``median``: median frequency balancing (Eigen & Fergus 2015),
      ``median(freq) / freq_c`` with ``freq_c = count_c / total`` and the median taken over
      the classes present (from total counts: the usual approximation of their per-image
      frequency).
    - ``auto``: ``inverse`` scaled to mean 1, then clipped at ``AUTO_MAX_WEIGHT``.

    A class with count 0 never occurs in training, so its weight does not matter, but it
    must stay finite: it gets the largest weight of the classes present.
    """
    if mode not in CLASS_WEIGHT_MODES:
        raise unknown("class weights mode", mode, CLASS_WEIGHT_MODES)
    counts = [int(c) for c in pixel_counts]
    if any(c < 0 for c in counts):
        raise UsageError(f"class weights '{mode}': negative label count in {counts}")
    total = sum(counts)
    present = [c for c in counts if c > 0]
    if not present:
        raise UsageError(f"class weights '{mode}': no labels counted, cannot weight classes")

    n = len(counts)
    if mode == "median":
        median = statistics.median(c / total for c in present)
        weights = [median / (c / total) if c else 0.0 for c in counts]
    else:
        weights = [total / (n * c) if c else 0.0 for c in counts]
        if mode == "auto":
            mean = sum(w for w, c in zip(weights, counts, strict=True) if c) / len(present)
            # Inverse frequency of a class with a handful of pixels can reach thousands and
            # would swamp every other class's gradient; 10x the mean is enough emphasis.
            weights = [min(w / mean, AUTO_MAX_WEIGHT) for w in weights]
    top = max(w for w, c in zip(weights, counts, strict=True) if c)
    return [w if c else top for w, c in zip(weights, counts, strict=True)]


def parse_class_weights(value: str, num_classes: int) -> list[float] | str:
    """``--class-weights``: a mode (``auto``, ``inverse``, ``median``), returned as is; a
    comma list such as ``1,2.5,0.3``; or a file holding a JSON list or numbers separated
    by commas or whitespace. Weights must be finite, >= 0 and one per class."""
    text = value.strip()
    if text.lower() in CLASS_WEIGHT_MODES:
        return text.lower()
    path = Path(text)
    if path.is_file():
        try:
            content = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"class weights file '{value}' cannot be read: {exc}") from None
        return _check_class_weights(_file_numbers(content, value), f"file '{value}'", num_classes)
    if "," in text or _is_number(text):
        return _check_class_weights(text.split(","), f"'{value}'", num_classes)
    close = difflib.get_close_matches(text.lower(), CLASS_WEIGHT_MODES, n=1, cutoff=0.6)
    if close:
        raise unknown("class weights mode", text, CLASS_WEIGHT_MODES)
    raise UsageError(
        f"class weights file '{value}' not found; expected auto, inverse, median, "
        f"a comma list of {num_classes} numbers or a file"
    )


def _file_numbers(content: str, value: str) -> list[Any]:
    if content.lstrip().startswith("["):
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            raise UsageError(f"class weights file '{value}' is not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise UsageError(f"class weights file '{value}': expected a JSON list of numbers")
        return data
    return content.replace(",", " ").split()


def _check_class_weights(items: Sequence[Any], where: str, num_classes: int) -> list[float]:
    expected = f"expected {num_classes} numbers >= 0, one per class"
    weights = []
    for item in items:
        shown = str(item).strip()
        # JSON true/false are ints to Python; they are not weights.
        if isinstance(item, bool) or not isinstance(item, (int, float, str)):
            raise UsageError(f"class weights {where}: '{shown}' is not a number; {expected}")
        try:
            weight = float(item)
        except ValueError:
            raise UsageError(
                f"class weights {where}: '{shown}' is not a number; {expected}"
            ) from None
        if not math.isfinite(weight) or weight < 0:
            raise UsageError(f"class weights {where}: '{shown}' is not allowed; {expected}")
        weights.append(weight)
    if len(weights) != num_classes:
        raise UsageError(f"class weights {where}: {len(weights)} values given; {expected}")
    if not any(weights):
        raise UsageError(f"class weights {where}: all weights are 0; {expected}")
    return weights


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
