"""Built-in losses, weighted loss specs (``0.7*ce+0.3*dice``) and class weights.

A built-in plugin: the CLI imports it at startup, so torch and smp are imported
only inside the functions that build a loss.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftkit.errors import UsageError, unknown
from ftkit.plugins.manager import hookimpl

LossFn = Callable[[Any, Any], Any]

CLASS_WEIGHT_MODES = ("auto", "inverse", "median")
AUTO_MAX_WEIGHT = 10.0
_LOSS_EXAMPLES = "expected e.g. ce, ce+dice or 0.7*ce+0.3*dice"


@hookimpl
def ftkit_register_losses(register: Callable[..., None]) -> None:
    register("ce", cross_entropy)
    register("dice", SmpLossFactory("dice", "DiceLoss"))
    register("focal", SmpLossFactory("focal", "FocalLoss", segmentation_only=False))
    register("lovasz", SmpLossFactory("lovasz", "LovaszLoss"))
    register("jaccard", SmpLossFactory("jaccard", "JaccardLoss"))
    register("tversky", SmpLossFactory("tversky", "TverskyLoss"))


# --- the built-in losses ----------------------------------------------------------------------


def cross_entropy(
    *,
    task: str,
    num_classes: int,
    class_weights: Sequence[float] | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    **_: Any,
) -> LossFn:
    """``torch.nn.CrossEntropyLoss`` with per-class weights, ignore index and label smoothing."""
    import torch

    _check_weights("ce", class_weights, num_classes)
    weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
    module = torch.nn.CrossEntropyLoss(
        weight=weight,
        ignore_index=-100 if ignore_index is None else ignore_index,
        label_smoothing=label_smoothing,
    )
    return _CrossEntropy(module)


class _CrossEntropy:
    # The training loop moves the model, not the loss: the weight buffer follows the logits.
    def __init__(self, module: Any) -> None:
        self.module = module

    def __call__(self, logits: Any, target: Any) -> Any:
        weight = self.module.weight
        if weight is not None and weight.device != logits.device:
            self.module.to(logits.device)
        return self.module(logits, target)

    def __repr__(self) -> str:
        return repr(self.module)


@dataclass(frozen=True)
class SmpLossFactory:
    """A ``segmentation_models_pytorch.losses`` class in multiclass mode.

    Pixels equal to ``ignore_index`` do not count. Class weights weight each class's
    term where the smp class accepts ``class_weights`` (Dice, Jaccard, Tversky and
    Focal in smp >= 0.6); Lovasz, and older smp versions, take none, so the weights
    are not applied there (ftkit does not reimplement smp). Label smoothing applies
    to ``ce`` only. Region losses (all but focal) are for segmentation only.
    """

    name: str
    smp_class: str
    segmentation_only: bool = True

    def __call__(
        self,
        *,
        task: str,
        num_classes: int,
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        **_: Any,
    ) -> LossFn:
        if self.segmentation_only and task != "segmentation":
            raise UsageError(
                f"loss '{self.name}' is a segmentation loss; for {task} use ce or focal"
            )
        _check_weights(self.name, class_weights, num_classes)
        from segmentation_models_pytorch import losses

        cls = getattr(losses, self.smp_class)
        kwargs: dict[str, Any] = {"mode": "multiclass", "ignore_index": ignore_index}
        if class_weights and "class_weights" in inspect.signature(cls).parameters:
            kwargs["class_weights"] = list(class_weights)
        # smp's multiclass focal loss indexes logits[:, c, ...], so (N, C) classification
        # logits with (N,) targets work as they are.
        return cls(**kwargs)


def _check_weights(name: str, weights: Sequence[float] | None, num_classes: int) -> None:
    if weights and len(weights) != num_classes:
        raise UsageError(
            f"loss '{name}': {len(weights)} class weights given, expected {num_classes} "
            "(one per class)"
        )


# --- loss specs -------------------------------------------------------------------------------


def parse_loss(spec: str, known: Iterable[str]) -> list[tuple[float, str]]:
    """``0.7*ce + 0.3*dice`` -> ``[(0.7, 'ce'), (0.3, 'dice')]``; a weight defaults to 1."""
    known = list(known)
    if not spec.strip():
        raise UsageError(f"invalid loss '{spec}': empty; {_LOSS_EXAMPLES}")
    terms: list[tuple[float, str]] = []
    for raw in spec.split("+"):
        term = raw.strip()
        if not term:
            raise UsageError(f"invalid loss '{spec}': empty term; {_LOSS_EXAMPLES}")
        parts = [p.strip() for p in term.split("*")]
        if len(parts) > 2 or not all(parts):
            raise UsageError(f"invalid loss '{spec}': bad term '{term}'; {_LOSS_EXAMPLES}")
        weight = 1.0
        if len(parts) == 2:
            try:
                weight = float(parts[0])
            except ValueError:
                raise UsageError(
                    f"invalid loss '{spec}': weight '{parts[0]}' is not a number; {_LOSS_EXAMPLES}"
                ) from None
            # float() accepts 'nan' and 'inf'; neither, nor a weight <= 0, is a loss weight.
            if not (math.isfinite(weight) and weight > 0):
                raise UsageError(
                    f"invalid loss '{spec}': weight '{parts[0]}' must be a positive number"
                )
        name = parts[-1]
        if name not in known:
            raise unknown("loss", name, known)
        terms.append((weight, name))
    return terms


class WeightedLoss:
    """The weighted sum of loss terms; its repr reads like the spec: ``0.7*ce + 0.3*dice``."""

    def __init__(self, terms: Sequence[tuple[float, str, LossFn]]) -> None:
        self.terms = list(terms)

    def __call__(self, logits: Any, target: Any) -> Any:
        total = None
        for weight, _, fn in self.terms:
            value = fn(logits, target)
            value = value if weight == 1.0 else weight * value
            total = value if total is None else total + value
        return total

    def __repr__(self) -> str:
        return " + ".join(
            name if weight == 1.0 else f"{weight:g}*{name}" for weight, name, _ in self.terms
        )


def build_loss(spec: str, registry: Any, **factory_kwargs: Any) -> WeightedLoss:
    """Parse ``spec`` against ``registry`` (``.get``/``.names``) and build every term with
    ``factory_kwargs`` (task, num_classes, class_weights, ignore_index, label_smoothing)."""
    terms = parse_loss(spec, registry.names())
    return WeightedLoss(
        [(weight, name, registry.get(name)(**factory_kwargs)) for weight, name in terms]
    )


# --- class weights ----------------------------------------------------------------------------


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
