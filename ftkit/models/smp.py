"""segmentation-models-pytorch: ``smp:ARCH:ENCODER``. The encoder stages are
the backbone; decoder and segmentation head are the head (seed 004's
"classifier")."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import ftkit.models.timm as timm_family
from ftkit.errors import UsageError, unknown
from ftkit.hooks import hookimpl
from ftkit.models.family import ModelFamily, NamedWeights, Preprocessing, pick
from ftkit.models.generic import child_layers
from ftkit.models.hub import hub_file
from ftkit.models.torchvision import resnet_layers
from ftkit.plan.anatomy import (
    BACKBONE,
    HEAD,
    Anatomy,
    AnatomyProvider,
    common_name,
    from_prefixes,
    join_names,
    merge_norms,
)


def build(rest: str, *, num_classes: int, task: str) -> Any:
    import segmentation_models_pytorch as smp

    arch, sep, encoder = rest.partition(":")
    if not sep or not encoder:
        raise UsageError(
            f"smp model spec 'smp:{rest}' must be smp:ARCH:ENCODER, e.g. smp:unet:resnet18"
        )
    if task != "segmentation":
        raise UsageError(
            f"smp:{rest} is a segmentation model; for classification use tv:NAME or timm:NAME"
        )
    archs = {
        cls.__name__.lower(): cls
        for cls in smp.__dict__.values()
        if isinstance(cls, type)
        and issubclass(cls, smp.base.SegmentationModel)
        and cls is not smp.base.SegmentationModel
    }
    pick("smp architecture", arch.lower(), sorted(archs))
    if encoder.startswith("tu-"):  # any timm model, through smp's universal encoder
        import timm

        pick("timm encoder", encoder[3:], timm.list_models())
    else:
        pick("smp encoder", encoder, smp.encoders.get_encoder_names())
    return archs[arch.lower()](encoder_name=encoder, encoder_weights=None, classes=num_classes)


def named_weights(rest: str, tag: str) -> NamedWeights:
    """The encoder's weights as smp would load them for ``encoder_weights=TAG``
    (``imagenet``...) from the Hub's cache; ``tu-`` encoders take timm's."""
    encoder = rest.partition(":")[2]
    if encoder.startswith("tu-"):
        return timm_family.named_weights(encoder[3:], tag)
    from safetensors.torch import load_file

    settings = _settings(encoder, tag)
    what = f"smp encoder {encoder} '{tag}'"
    path = hub_file(settings["repo_id"], "model.safetensors", what, settings.get("revision"))
    return NamedWeights(load_file(str(path)), f"{what} ({path})")


def preprocessing(rest: str, tag: str | None) -> Preprocessing:
    """The encoder's normalisation; a segmentation model has no fixed input size."""
    encoder = rest.partition(":")[2]
    if encoder.startswith("tu-"):
        pre = timm_family.preprocessing(encoder[3:], tag)
        return replace(pre, input_size=None)
    settings = _settings(encoder, tag or "imagenet", strict=False)
    if settings:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(
            settings["repo_id"], "config.json", revision=settings.get("revision")
        )
        if isinstance(config, str):  # smp keeps the statistics beside the weights
            values = json.loads(Path(config).read_text())
            if "mean" in values and "std" in values:
                what = f"smp encoder {encoder} '{tag or 'imagenet'}'"
                return Preprocessing(tuple(values["mean"]), tuple(values["std"]), None, what)
    return Preprocessing()


def _settings(encoder: str, tag: str, strict: bool = True) -> dict[str, Any]:
    import segmentation_models_pytorch as smp

    known = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    if tag in known:
        return known[tag]
    if strict:
        raise unknown(f"pretrained weights of smp encoder '{encoder}'", tag, known)
    return {}


def _anatomy(model: Any) -> Anatomy:
    import torchvision.models as tvm

    if isinstance(model.encoder, tvm.ResNet):
        encoder = resnet_layers(model.encoder, "encoder.", head=None)
    elif type(getattr(model.encoder, "model", None)).__module__.startswith("timm."):
        encoder = _timm_encoder_layers(model.encoder)  # tu-NAME: smp wraps a timm model
    else:
        encoder = merge_norms(model, _smp_encoder_layers(model.encoder))
    head = [
        (name, [name], HEAD)
        for name in ("decoder", "segmentation_head", "classification_head")
        if getattr(model, name, None) is not None
    ]
    return from_prefixes(model, [*encoder, *head], "smp")


def _timm_encoder_layers(encoder: Any) -> list:
    """One layer per group of timm's own ``group_matcher(coarse=False)`` for the
    timm model at ``encoder.model``. A features-only model (``FeatureListNet``)
    has no matcher and flattens Sequential children (``stages.0`` becomes
    ``stages_0``): the matcher then comes from the full model, built on the meta
    device (no memory, no weights), and its names are mapped back."""
    import timm
    import torch
    from torch import nn

    inner = encoder.model
    names = [n for n, _ in inner.named_parameters()]
    full, original = inner, {n: n for n in names}
    if not hasattr(inner, "group_matcher"):
        with torch.device("meta"):
            full = timm.create_model(encoder.name, pretrained=False)
        flat = {
            f"{n}_{c}": f"{n}.{c}"
            for n, m in full.named_children()
            if isinstance(m, nn.Sequential)
            for c, _ in m.named_children()
        }
        for n in names:
            first, _, rest = n.partition(".")
            original[n] = f"{flat[first]}.{rest}" if first in flat else n
    shown = {o: n for n, o in original.items()}
    matcher = full.group_matcher(coarse=False)
    classifier = full.get_classifier() if hasattr(full, "get_classifier") else None
    ids = {id(p) for p in classifier.parameters()} if isinstance(classifier, nn.Module) else set()
    unused = {n for n, p in full.named_parameters() if id(p) in ids}
    groups: list[list[str]] = []
    for group in timm_family.matcher_groups(list(shown), matcher):
        if groups and all(n in unused for n in group):
            # smp never calls the timm classifier (DPT keeps it): not a layer of its own
            groups[-1] += group
        else:
            groups.append(group)
    layers = []
    for group in groups:
        label = timm_family.matcher_label(group, matcher, list(shown))
        members = [shown[n] for n in group]
        if label != "stem":  # named as smp's copy calls its parameters
            label = common_name(members, names)
        layers.append((f"encoder.model.{label}", [f"encoder.model.{n}" for n in members], BACKBONE))
    return layers


def _smp_encoder_layers(encoder: Any) -> list:
    """smp's own encoders: their children in order, a ModuleList of blocks
    (EfficientNet's ``_blocks``) one layer per block."""
    from segmentation_models_pytorch.encoders.efficientnet import EfficientNetEncoder
    from torch import nn

    modules = dict(encoder.named_modules())
    layers = []
    for name, prefixes, part in child_layers(encoder, "", BACKBONE):
        block = modules.get(prefixes[0]) if len(prefixes) == 1 else None
        if isinstance(block, nn.ModuleList):
            layers += [
                (f"encoder.{name}.{c}", [f"encoder.{name}.{c}"], part)
                for c, m in block.named_children()
                if any(True for _ in m.parameters())
            ]
        else:
            layers.append((f"encoder.{name}", [f"encoder.{p}" for p in prefixes], part))
    if isinstance(encoder, EfficientNetEncoder):
        # efficientnet-pytorch's _conv_head and _bn1 stay in smp's encoder but its
        # forward never calls them: they join the last block instead of heading the backbone
        unused = [layer for layer in layers if layer[0] in ("encoder._conv_head", "encoder._bn1")]
        layers = [layer for layer in layers if layer not in unused]
        name, prefixes, part = layers[-1]
        layers[-1] = (
            join_names(name, *(u[0] for u in unused)),
            [*prefixes, *(p for u in unused for p in u[1])],
            part,
        )
    return layers


def split(model: Any) -> Any:
    """Encoder, then decoder and segmentation head (not with an auxiliary
    classification head, which also reads the encoder)."""
    from ftkit.models.split import Split, params_under

    if getattr(model, "classification_head", None) is not None:
        return None
    return Split(
        model.encoder,
        model.encoder,
        lambda features: model.segmentation_head(model.decoder(features)),
        params_under(model, "encoder"),
    )


def _matches(model: Any) -> bool:
    return type(model).__module__.startswith("segmentation_models_pytorch.")


@hookimpl
def ftkit_register_models(register):
    register(ModelFamily("smp", build, named_weights, preprocessing, split=split))


@hookimpl
def ftkit_register_anatomies(register):
    register(AnatomyProvider("smp", _matches, _anatomy, priority=10))
