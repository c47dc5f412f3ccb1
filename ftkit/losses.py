"""Built-in losses, weighted loss specs (``0.7*ce+0.3*dice``) and class weights.

A built-in plugin: the CLI imports it at startup, so torch and smp are imported
only inside the functions that build a loss.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ftkit.errors import UsageError, did_you_mean, unknown
from ftkit.hooks import hookimpl

LossFn = Callable[[Any, Any], Any]

_LOSS_EXAMPLES = "expected e.g. ce, ce+dice or 0.7*ce+0.3*dice"


@dataclass(frozen=True)
class Loss:
    """``--loss NAME``: ``factory(task=, num_classes=, class_weights=,
    ignore_index=, label_smoothing=)`` returns ``loss(logits, target)``. The
    factory's optional ``takes``, ``params`` and ``segmentation_only``
    attributes say what it honours (see ``ftkit_register_losses``)."""

    name: str
    factory: Callable[..., LossFn]


@hookimpl
def ftkit_register_losses(register: Callable[[Loss], None]) -> None:
    register(Loss("ce", cross_entropy))
    register(Loss("dice", SmpLossFactory("dice", "DiceLoss")))
    register(
        Loss(
            "focal",
            SmpLossFactory(
                "focal", "FocalLoss", segmentation_only=False, params=("alpha", "gamma")
            ),
        )
    )
    register(Loss("lovasz", SmpLossFactory("lovasz", "LovaszLoss")))
    register(Loss("jaccard", SmpLossFactory("jaccard", "JaccardLoss")))
    register(
        Loss(
            "tversky",
            SmpLossFactory("tversky", "TverskyLoss", params=("alpha", "beta", "gamma")),
        )
    )


# What a loss factory honours of the run's options. A factory says so in its ``takes``
# attribute; one that does not (a plugin's) is trusted to honour all of them.
RUN_OPTIONS = {"class_weights": "--class-weights", "label_smoothing": "--label-smoothing"}
_READABLE = {"class_weights": "class weights", "label_smoothing": "label smoothing"}


def factory_of(loss: Any) -> Any:
    """The factory of a registered ``Loss`` (a bare factory passes through)."""
    return loss.factory if isinstance(loss, Loss) else loss


def takes(factory: Any, option: str) -> bool:
    declared = getattr(factory_of(factory), "takes", None)
    return declared is None or option in declared


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


cross_entropy.takes = frozenset(RUN_OPTIONS)  # type: ignore[attr-defined]
# PyTorch's cross-entropy takes class probabilities (MixUp/CutMix) as well as indices.
cross_entropy.soft_targets = True  # type: ignore[attr-defined]


def takes_soft_targets(factory: Any) -> bool:
    """True when a loss declares ``soft_targets``: (N, C) probabilities as targets."""
    return bool(getattr(factory_of(factory), "soft_targets", False))


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
    Focal in smp >= 0.6); Lovasz, and older smp versions, take none, and ``takes``
    says so, so that asking for them is refused rather than ignored (ftkit does not
    reimplement smp). None takes label smoothing. ``params`` are the smp arguments a
    spec may set, as in ``tversky(alpha=0.3,beta=0.7)``. Region losses (all but
    focal) are for segmentation only.
    """

    name: str
    smp_class: str
    segmentation_only: bool = True
    params: tuple[str, ...] = ()

    @property
    def takes(self) -> frozenset[str]:
        from segmentation_models_pytorch import losses

        cls = getattr(losses, self.smp_class)
        weighted = "class_weights" in inspect.signature(cls).parameters
        return frozenset({"class_weights"} if weighted else ())

    def __call__(
        self,
        *,
        task: str,
        num_classes: int,
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        params: dict[str, float] | None = None,
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
        kwargs.update(params or {})
        if class_weights and "class_weights" in self.takes:
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


class LossTerm(NamedTuple):
    weight: float
    name: str
    params: dict[str, float]

    def __str__(self) -> str:
        args = ",".join(f"{k}={v:g}" for k, v in self.params.items())
        text = f"{self.name}({args})" if args else self.name
        return text if self.weight == 1.0 else f"{self.weight:g}*{text}"


def parse_loss(spec: str, known: Iterable[str]) -> list[tuple[float, str]]:
    """``0.7*ce + 0.3*dice`` -> ``[(0.7, 'ce'), (0.3, 'dice')]``; a weight defaults to 1."""
    return [(t.weight, t.name) for t in parse_loss_terms(spec, known)]


def parse_loss_terms(spec: str, known: Iterable[str]) -> list[LossTerm]:
    """Like ``parse_loss``, and a term may set its loss's parameters:
    ``0.5*ce + 0.5*tversky(alpha=0.3,beta=0.7)``."""
    known = list(known)
    if not spec.strip():
        raise UsageError(f"invalid loss '{spec}': empty; {_LOSS_EXAMPLES}")
    terms: list[LossTerm] = []
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
        name, params = _name_and_params(parts[-1], spec)
        if name not in known:
            raise unknown("loss", name, known)
        terms.append(LossTerm(weight, name, params))
    return terms


def _name_and_params(text: str, spec: str) -> tuple[str, dict[str, float]]:
    """``tversky(alpha=0.3, beta=0.7)`` -> ``('tversky', {'alpha': 0.3, 'beta': 0.7})``."""
    name, paren, rest = text.partition("(")
    if not paren:
        return text, {}
    example = "expected e.g. tversky(alpha=0.3,beta=0.7)"
    if not rest.endswith(")"):
        raise UsageError(f"invalid loss '{spec}': bad term '{text}'; {example}")
    params: dict[str, float] = {}
    for item in rest[:-1].split(","):
        key, eq, value = (p.strip() for p in item.partition("="))
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not eq or not key or not math.isfinite(number):
            raise UsageError(f"invalid loss '{spec}': bad parameter '{item.strip()}'; {example}")
        params[key] = number
    return name.strip(), params


def check_loss_spec(
    spec: str,
    registry: Any,
    *,
    task: str,
    class_weights: bool,
    label_smoothing: float,
) -> list[str]:
    """Refuse, before any work, what a loss spec cannot do: an unknown parameter, a
    segmentation loss for classification, or a run option that no term honours.

    The rule for a sum: an option is accepted when at least one term honours it; it
    applies to those terms only, and the returned notes name the terms that ignore it.
    """
    terms = parse_loss_terms(spec, registry.names())
    for term in terms:
        factory = factory_of(registry.get(term.name))
        allowed = tuple(getattr(factory, "params", ()))
        for key, value in term.params.items():
            if key not in allowed:
                takes_none = "takes no parameters" if not allowed else f"takes {', '.join(allowed)}"
                raise UsageError(
                    f"invalid loss '{spec}': loss '{term.name}' has no parameter '{key}'"
                    f"{did_you_mean(key, allowed)}; it {takes_none}"
                )
            if value < 0:
                raise UsageError(
                    f"invalid loss '{spec}': {term.name} {key} must be >= 0, got {value:g}"
                )
        if getattr(factory, "segmentation_only", False) and task != "segmentation":
            raise UsageError(
                f"loss '{term.name}' is a segmentation loss; for {task} use ce or focal"
            )
    notes = []
    for option, given in (("class_weights", class_weights), ("label_smoothing", label_smoothing)):
        if not given:
            continue
        flag, what = RUN_OPTIONS[option], _READABLE[option]
        honour = [t.name for t in terms if takes(registry.get(t.name), option)]
        ignore = [t.name for t in terms if t.name not in honour]
        if not honour:
            able = [n for n in registry.names() if takes(registry.get(n), option)]
            subject = f"loss '{spec}' does not" if len(terms) == 1 else f"no term of '{spec}' can"
            raise UsageError(
                f"{flag}: {subject} take {what}; use {', '.join(able)} or a sum like "
                f"{able[0]}+{spec}"
                if able
                else f"{flag}: no loss takes {what}"
            )
        if ignore:
            notes.append(
                f"{flag} applies to {', '.join(honour)} only: "
                f"{', '.join(ignore)} {'takes' if len(ignore) == 1 else 'take'} no {what}"
            )
    return notes


class WeightedLoss:
    """The weighted sum of loss terms; its repr reads like the spec: ``0.7*ce + 0.3*dice``."""

    def __init__(self, terms: Sequence[tuple[float, Any, LossFn]]) -> None:
        # each term's name is its spec text: a ``LossTerm`` or a plain loss name
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
            str(name) if isinstance(name, LossTerm) or weight == 1.0 else f"{weight:g}*{name}"
            for weight, name, _ in self.terms
        )


def build_loss(spec: str, registry: Any, **factory_kwargs: Any) -> WeightedLoss:
    """Parse ``spec`` against ``registry`` (``.get``/``.names``) and build every term with
    ``factory_kwargs`` (task, num_classes, class_weights, ignore_index, label_smoothing)."""
    terms = parse_loss_terms(spec, registry.names())
    built = []
    for term in terms:
        factory = factory_of(registry.get(term.name))
        kwargs = dict(factory_kwargs)
        # Only what the loss honours reaches it: a term of a sum that ignores an option
        # gets none of it (check_loss_spec refuses an option no term honours).
        for option in RUN_OPTIONS:
            if not takes(factory, option):
                kwargs.pop(option, None)
        if term.params:
            kwargs["params"] = term.params
        built.append((term.weight, term, factory(**kwargs)))
    return WeightedLoss(built)


# --- class weights ----------------------------------------------------------------------------
