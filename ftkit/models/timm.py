"""timm models: ``timm:NAME``; anatomy from timm's own ``group_matcher``, so
LLRD matches ``timm.optim.param_groups_layer_decay`` exactly."""

from __future__ import annotations

from typing import Any

from ftkit.errors import UsageError, unknown
from ftkit.hooks import hookimpl
from ftkit.models.family import ModelFamily, NamedWeights, Preprocessing, pick
from ftkit.models.hub import hub_checkpoint, hub_file
from ftkit.plan.anatomy import (
    BACKBONE,
    HEAD,
    Anatomy,
    AnatomyProvider,
    Layer,
    common_name,
    param_facts,
)


def build(name: str, *, num_classes: int, task: str) -> Any:
    import timm

    if task != "classification":
        raise UsageError(
            f"timm:{name} is a classification model; for segmentation use "
            f"smp:ARCH:ENCODER (smp accepts timm encoders as tu-NAME)"
        )
    pick("timm model", name, timm.list_models())
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def _pretrained_cfg(name: str, tag: str | None) -> Any:
    """timm's record of a pretrained variant: ``imagenet`` (or None, for a
    weights file) is the model's default tag; anything else is a tag."""
    import timm

    if tag is None or tag.lower() == "imagenet":
        return timm.models.get_pretrained_cfg(name)
    try:
        cfg = timm.models.get_pretrained_cfg(f"{name}.{tag}")
    except RuntimeError:  # timm's word for a tag it does not know
        cfg = None
    if cfg is None:
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{name}.*")]
        raise unknown(f"pretrained tag of timm:{name}", tag, ["imagenet", *tags])
    return cfg


def named_weights(name: str, tag: str) -> NamedWeights:
    cfg = _pretrained_cfg(name, tag)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UsageError(f"timm has no pretrained weights for '{name}'")
    what = f"timm {name}.{cfg.tag}" if cfg.tag else f"timm {name}"
    if cfg.hf_hub_id:
        from safetensors.torch import load_file

        path = hub_file(cfg.hf_hub_id, "model.safetensors", what)
        state = load_file(str(path))
    else:
        path, state = hub_checkpoint(cfg.url, what)
    return NamedWeights(state, f"{what} ({path})")


def preprocessing(name: str, tag: str | None) -> Preprocessing:
    cfg = _pretrained_cfg(name, tag)
    if cfg is None:
        return Preprocessing()
    return _preprocessing_of(cfg, f"timm {name}.{cfg.tag}" if cfg.tag else f"timm {name}")


def _preprocessing_of(cfg: Any, what: str) -> Preprocessing:
    size = cfg.input_size[-1] if cfg.input_size else None
    return Preprocessing(
        tuple(cfg.mean), tuple(cfg.std), size, f"{what} pretrained_cfg", crop_pct=cfg.crop_pct
    )


def convert(state: dict[str, Any], model: Any) -> dict[str, Any]:
    """timm's own converter for the model's checkpoints (other key layouts,
    position embeddings of another size), where its module has one."""
    import sys

    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    return filter_fn(state, model) if filter_fn is not None else state


def matcher_groups(names: list[str], matcher: Any) -> list[list[str]]:
    """Parameter names grouped, from input to output, by a timm ``group_matcher``
    (fine: one group per block), as ``timm.optim.param_groups_layer_decay`` does."""
    from timm.models._manipulate import group_with_matcher

    groups = group_with_matcher(((n, None) for n in names), matcher)
    return [groups[gid] for gid in sorted(groups)]


def matcher_label(members: list[str], matcher: Any, everything: list[str]) -> str:
    """What a group holds: ``stem`` when the matcher's stem pattern takes all
    of it, else the module path its parameters share (``blocks.1.0``,
    ``layer1.1``, ``blocks.11+norm``)."""
    import re

    stem = matcher.get("stem") if isinstance(matcher, dict) else None
    if isinstance(stem, str) and all(re.match(stem, n) for n in members):
        return "stem"
    return common_name(members, everything)


def _anatomy(model: Any) -> Anatomy:
    matcher = model.group_matcher(coarse=False)
    classifier = model.get_classifier()
    head_params = {id(p) for p in classifier.parameters()} if classifier is not None else set()
    by_name = dict(model.named_parameters())
    layers = []
    for names in matcher_groups(list(by_name), matcher):
        is_head = bool(head_params) and all(id(by_name[n]) in head_params for n in names)
        label = "head" if is_head else matcher_label(names, matcher, list(by_name))
        layers.append(Layer(label, tuple(names), HEAD if is_head else BACKBONE))
    return Anatomy(tuple(layers), *param_facts(model), provider="timm-group_matcher")


def _matches(model: Any) -> bool:
    return type(model).__module__.startswith("timm.") and hasattr(model, "group_matcher")


def split(model: Any) -> Any:
    """``forward_features``, then ``forward_head`` (timm's own split)."""
    from ftkit.models.split import Split

    classifier = {id(p) for p in model.get_classifier().parameters()}
    trunk = frozenset(n for n, p in model.named_parameters() if id(p) not in classifier)
    return Split(model, model.forward_features, model.forward_head, trunk)


@hookimpl
def ftkit_register_models(register):
    register(ModelFamily("timm", build, named_weights, preprocessing, convert, split))


@hookimpl
def ftkit_register_anatomies(register):
    register(AnatomyProvider("timm", _matches, _anatomy, priority=10))
