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
        """The layer group called ``name``, as ``ftkit plan`` prints it: a plan's
        ``head`` group (llrd, two-stage) is the first head layer, and a
        ``+NAME`` stage or a ``NAME/no_decay`` group names the layer NAME."""
        name = name.removeprefix("+").removesuffix("/no_decay")
        for layer in self.layers:
            if layer.name == name:
                return layer
        if name == HEAD and self.head:
            return self.head[0]
        from ftkit.errors import unknown

        known = [layer.name for layer in self.layers]
        known += [HEAD] if HEAD not in known and self.head else []
        raise unknown("layer group", name, known, ordered=True)

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


# Tokens and position embeddings of models that do not list them in a
# ``no_weight_decay()``: torchvision's ViT and Swin (the names its reference
# training script exempts with --transformer-embedding-decay).
TOKEN_NAMES = frozenset(
    {"class_token", "pos_embedding", "position_embedding", "relative_position_bias_table"}
)


def param_facts(model: nn.Module) -> tuple[dict[str, int], frozenset[str]]:
    """Sizes of all parameters, and those that take no weight decay: biases,
    normalisation weights, other 1-D tensors, tokens and position embeddings:
    what any submodule lists in its ``no_weight_decay()`` (timm models, also
    inside smp's encoders) and torchvision's ``TOKEN_NAMES``."""
    from torch import nn

    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
    no_decay: set[str] = set()
    listed: set[str] = set()
    for mname, module in model.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(module, norms):
            no_decay.update(prefix + p for p, _ in module.named_parameters(recurse=False))
        skip = getattr(module, "no_weight_decay", None)
        if callable(skip):  # names relative to that module, possibly of a module in it
            listed.update(prefix + n for n in skip())
    sizes = {}
    for name, param in model.named_parameters():
        sizes[name] = param.numel()
        if (
            param.ndim <= 1
            or name in listed
            or name.rpartition(".")[0] in listed  # timm may list a module, e.g. "pos_embed"
            or name.endswith(".bias")
            or name.rpartition(".")[2] in TOKEN_NAMES
        ):
            no_decay.add(name)
    return sizes, frozenset(no_decay)


def common_name(params: Iterable[str], everything: Iterable[str] = ()) -> str:
    """A layer group's name from what it holds: the module path its parameters
    share when they are all of that module's parameters (``layer1.0``), else
    the paths of its parts (``blocks.11+norm``, ``stages_1.downsample+blocks.0``).
    ``everything`` is every parameter name of the model (default: ``params``)."""
    members = list(params)
    every = list(everything) or members

    def paths(names: list[str]) -> list[str]:
        split = [n.split(".") for n in names]
        shared: list[str] = []
        for column in zip(*split, strict=False):
            if len(set(column)) > 1:
                break
            shared.append(column[0])
        prefix = ".".join(shared[:-1] if len(names) == 1 else shared)
        under = {n for n in every if n == prefix or n.startswith(prefix + ".")}
        if prefix and under <= set(names):  # the whole module
            return [prefix]
        if len(names) == 1:
            return names
        parts: dict[str, list[str]] = {}
        for name, pieces in zip(names, split, strict=True):
            parts.setdefault(pieces[len(shared)], []).append(name)
        return [path for part in parts.values() for path in paths(part)]

    first, *others = paths(members)
    return join_names(first, *others)


def merge_norms(model: nn.Module, layers: list[tuple[str, list[str], str]]) -> list:
    """Join a layer that is only a normalisation module to the layer it
    normalises (the one before it; the first one joins the next): on its own it
    would make a strategy stage or LR group of a few dozen parameters."""
    from torch import nn

    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    modules = dict(model.named_modules())
    out: list[tuple[str, list[str], str]] = []
    pending: list[str] = []
    for name, prefixes, part in layers:
        if all(isinstance(modules.get(p), norms) for p in prefixes):
            if out and out[-1][2] == part:
                last, last_prefixes, _ = out[-1]
                out[-1] = (join_names(last, name), [*last_prefixes, *prefixes], part)
            else:
                pending += prefixes
            continue
        if pending:
            name, prefixes = join_names(name, *pending), [*prefixes, *pending]
            pending = []
        out.append((name, prefixes, part))
    return out


def join_names(first: str, *others: str) -> str:
    """``features.conv0`` + ``features.norm0`` -> ``features.conv0+norm0``: each
    later name without the leading path it shares with the first."""
    head = first.split(".")
    rest = []
    for other in others:
        pieces = other.split(".")
        n = 0
        while n < min(len(head), len(pieces) - 1) and head[n] == pieces[n]:
            n += 1
        rest.append(".".join(pieces[n:]))
    return "+".join([first, *rest])


def anatomy_of(model: nn.Module, providers: Iterable[AnatomyProvider]) -> Anatomy:
    ranked = sorted(providers, key=lambda p: -p.priority)
    for provider in ranked:
        if provider.matches(model):
            return provider.build(model)
    raise UsageError(f"no anatomy knows the model {type(model).__name__}")
