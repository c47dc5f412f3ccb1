"""A model seen as ordered, named layers from input to output.

Each layer is marked ``backbone`` or ``head`` (the "classifier" of seed 004).
Strategies only ever look at an ``Anatomy``: it is plain data (parameter names
and sizes), so plans are pure functions of it, in the spirit of timm's
``_param_groups.py``. Built-in providers live in ``ftkit.models``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ftkit.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

BACKBONE, HEAD = "backbone", "head"


@dataclass(frozen=True)
class Layer:
    name: str
    params: tuple[str, ...]
    part: str  # BACKBONE or HEAD


@dataclass(frozen=True)
class Anatomy:
    layers: tuple[Layer, ...]
    sizes: Mapping[str, int]  # every parameter of the model -> number of elements
    no_decay: frozenset[str] = field(default_factory=frozenset)
    provider: str = ""

    @property
    def backbone(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.part == BACKBONE)

    @property
    def head(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.part == HEAD)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        from ftkit.errors import unknown

        raise unknown("layer group", name, [layer.name for layer in self.layers])

    def params_of(self, layers: Iterable[Layer]) -> tuple[str, ...]:
        return tuple(p for layer in layers for p in layer.params)

    def regroup(self, spec: str) -> Anatomy:
        """Regroup by name patterns: ``"early=conv1|bn1|layer1;late=layer4;head=fc"``.

        Patterns are regular expressions matched at the start of parameter
        names; the first group that matches takes the parameter. A new group is
        head when all its parameters were head. Every parameter must match.
        """
        groups: list[tuple[str, re.Pattern[str]]] = []
        for item in filter(None, (s.strip() for s in spec.split(";"))):
            name, sep, pattern = item.partition("=")
            if not sep or not name.strip() or not pattern.strip():
                raise UsageError(f"regroup: expected NAME=PATTERN, got {item!r}")
            try:
                groups.append((name.strip(), re.compile(pattern.strip())))
            except re.error as exc:
                raise UsageError(f"regroup: bad pattern {pattern!r} for '{name}': {exc}") from None
        if not groups:
            raise UsageError(f"regroup: no groups in {spec!r}")
        heads = set(self.params_of(self.head))
        members: dict[str, list[str]] = {name: [] for name, _ in groups}
        for param in self.params_of(self.layers):
            owner = next((name for name, rx in groups if rx.match(param)), None)
            if owner is None:
                raise UsageError(f"regroup: parameter '{param}' matches no group in {spec!r}")
            members[owner].append(param)
        layers = tuple(
            Layer(name, tuple(ps), HEAD if ps and all(p in heads for p in ps) else BACKBONE)
            for name, ps in members.items()
            if ps
        )
        return Anatomy(layers, self.sizes, self.no_decay, self.provider + "+regroup")


@dataclass(frozen=True)
class AnatomyProvider:
    """What ``ftkit_register_anatomies`` registers."""

    name: str
    matches: Callable[[Any], bool]
    build: Callable[[Any], Anatomy]
    priority: int = 0


def from_prefixes(
    model: nn.Module, layers: Iterable[tuple[str, Iterable[str], str]], provider: str
) -> Anatomy:
    """Build an anatomy from ``(layer name, module-name prefixes, part)``.

    Every trainable parameter must fall in exactly one layer; a parameter left
    out would silently never train, so that is an error.
    """
    spec = [(name, tuple(prefixes), part) for name, prefixes, part in layers]
    owned: dict[str, list[str]] = {name: [] for name, _, _ in spec}
    for pname, _ in model.named_parameters():
        owner = next(
            (
                name
                for name, prefixes, _ in spec
                if any(pname == p or pname.startswith(p + ".") for p in prefixes)
            ),
            None,
        )
        if owner is None:
            raise UsageError(f"anatomy '{provider}': parameter '{pname}' belongs to no layer")
        owned[owner].append(pname)
    return Anatomy(
        tuple(Layer(name, tuple(owned[name]), part) for name, _, part in spec if owned[name]),
        *param_facts(model),
        provider=provider,
    )


def param_facts(model: nn.Module) -> tuple[dict[str, int], frozenset[str]]:
    """Sizes of all parameters, and those that take no weight decay: biases,
    normalisation weights, other 1-D tensors, and what the model itself lists
    in ``no_weight_decay()`` (timm: position embeddings, class tokens)."""
    from torch import nn

    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
    no_decay: set[str] = set()
    for mname, module in model.named_modules():
        if isinstance(module, norms):
            no_decay.update(
                f"{mname}.{p}" if mname else p for p, _ in module.named_parameters(recurse=False)
            )
    skip = getattr(model, "no_weight_decay", None)
    listed = set(skip()) if callable(skip) else set()
    sizes = {}
    for name, param in model.named_parameters():
        sizes[name] = param.numel()
        if param.ndim <= 1 or name in listed or name.endswith(".bias"):
            no_decay.add(name)
    return sizes, frozenset(no_decay)


def anatomy_of(model: nn.Module, providers: Iterable[AnatomyProvider]) -> Anatomy:
    ranked = sorted(providers, key=lambda p: -p.priority)
    for provider in ranked:
        if provider.matches(model):
            return provider.build(model)
    raise UsageError(f"no anatomy knows the model {type(model).__name__}")
