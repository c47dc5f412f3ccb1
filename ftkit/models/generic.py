"""The fallback anatomy for any ``nn.Module``: its top-level children in
order, the last one with parameters as the head."""

from __future__ import annotations

from typing import Any

from ftkit.hooks import hookimpl
from ftkit.plan.anatomy import BACKBONE, HEAD, Anatomy, AnatomyProvider, from_prefixes


def child_layers(module: Any, prefix: str, part: str) -> list:
    """One layer per child that has parameters, looking through wrappers that
    hold a single child (``encoder.model`` in smp's timm encoders)."""
    children = [(n, m) for n, m in module.named_children() if any(True for _ in m.parameters())]
    own = [n for n, _ in module.named_parameters(recurse=False)]
    if len(children) == 1 and not own:
        name, child = children[0]
        return child_layers(child, f"{prefix}{name}.", part)
    layers = [(prefix + n, [prefix + n], part) for n, _ in children]
    return (
        [(prefix.rstrip(".") or "root", [prefix + n for n in own], part), *layers]
        if own
        else layers
    )


def _anatomy(model: Any) -> Anatomy:
    layers = child_layers(model, "", BACKBONE)
    name, prefixes, _ = layers[-1]
    layers[-1] = (name, prefixes, HEAD)
    return from_prefixes(model, layers, "generic")


@hookimpl
def ftkit_register_anatomies(register):
    register(AnatomyProvider("generic", lambda model: True, _anatomy, priority=-100))
