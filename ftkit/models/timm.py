"""timm models: ``timm:NAME``; anatomy from timm's own ``group_matcher``, so
LLRD matches ``timm.optim.param_groups_layer_decay`` exactly."""

from __future__ import annotations

from typing import Any

from ftkit.anatomy import BACKBONE, HEAD, Anatomy, AnatomyProvider, Layer, param_facts
from ftkit.models import pick
from ftkit.plugins.manager import hookimpl


def build(name: str, *, num_classes: int, task: str) -> Any:
    import timm

    from ftkit.errors import UsageError

    if task != "classification":
        raise UsageError(
            f"timm:{name} is a classification model; for segmentation use "
            f"smp:ARCH:ENCODER (smp accepts timm encoders as tu-NAME)"
        )
    pick("timm model", name, timm.list_models())
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def _anatomy(model: Any) -> Anatomy:
    from timm.models import group_parameters

    groups = group_parameters(model, model.group_matcher(coarse=False))
    classifier = model.get_classifier()
    head_params = {id(p) for p in classifier.parameters()} if classifier is not None else set()
    by_id = dict(model.named_parameters())
    layers = []
    for gid in sorted(groups):
        names = tuple(groups[gid])
        is_head = bool(head_params) and all(id(by_id[n]) in head_params for n in names)
        label = "head" if is_head else f"group{gid}"
        if not is_head and all(n.startswith("blocks.") for n in names[:1]):
            label = "blocks." + names[0].split(".")[1]
        elif gid == 0 and not is_head:
            label = "stem"
        layers.append(Layer(label, names, HEAD if is_head else BACKBONE))
    return Anatomy(tuple(layers), *param_facts(model), provider="timm-group_matcher")


def _matches(model: Any) -> bool:
    return type(model).__module__.startswith("timm.") and hasattr(model, "group_matcher")


@hookimpl
def ftkit_register_models(register):
    register("timm", build)


@hookimpl
def ftkit_register_anatomies(register):
    register(AnatomyProvider("timm", _matches, _anatomy, priority=10))
