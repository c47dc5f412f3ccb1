"""torchvision classification models: ``tv:NAME`` and their anatomies."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ftkit.errors import UsageError, unknown
from ftkit.hooks import hookimpl
from ftkit.models.family import ModelFamily, NamedWeights, Preprocessing, pick
from ftkit.models.hub import bounded_network, not_cached, offline_reason
from ftkit.plan.anatomy import BACKBONE, HEAD, Anatomy, AnatomyProvider, from_prefixes, merge_norms


def build(name: str, *, num_classes: int, task: str) -> Any:
    import torchvision

    if task != "classification":
        raise UsageError(
            f"tv:{name} is a classification model; for segmentation use "
            f"smp:ARCH:ENCODER, e.g. smp:unet:resnet18"
        )
    pick("torchvision model", name, torchvision.models.list_models(torchvision.models))
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def _weights_enum(name: str) -> Any:
    import torchvision

    try:
        return torchvision.models.get_model_weights(name)
    except (KeyError, ValueError):
        return None


def named_weights(name: str, tag: str) -> NamedWeights:
    """``imagenet`` is the enum's DEFAULT, or another ImageNet member already
    in the cache (offline machines often hold an older one); any other tag
    is an enum member, e.g. ``IMAGENET1K_V2``."""
    import torch

    enum = _weights_enum(name)
    if enum is None:
        raise UsageError(f"torchvision has no pretrained weights for '{name}'")
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    if tag.lower() == "imagenet":
        candidates = [enum.DEFAULT] + [
            m for m in enum if m.name.startswith("IMAGENET") and m is not enum.DEFAULT
        ]
        member = next((m for m in candidates if (folder / _filename(m)).is_file()), enum.DEFAULT)
    elif tag.upper() in enum.__members__:
        member = enum[tag.upper()]
    else:
        raise unknown(f"weights name for tv:{name}", tag, ["imagenet", *enum.__members__])
    what = f"torchvision {type(member).__name__}.{member.name}"
    try:
        with bounded_network():
            state = member.get_state_dict(progress=False, weights_only=True)
    except OSError as exc:  # URLError, timeouts and DNS failures are OSErrors
        raise not_cached(what, _filename(member), folder, offline_reason(exc)) from None
    return NamedWeights(state, f"{what} ({folder / _filename(member)})")


def preprocessing(name: str, tag: str | None) -> Preprocessing:
    """The weights' own transforms; a weights file is taken to be the DEFAULT's."""
    enum = _weights_enum(name)
    if enum is None:
        return Preprocessing()
    if tag and tag.upper() in enum.__members__:
        member = enum[tag.upper()]
        return _preprocessing_of(member, f"torchvision {type(member).__name__}.{member.name}")
    return _preprocessing_of(enum.DEFAULT, f"torchvision {enum.__name__} transforms")


def _preprocessing_of(member: Any, what: str) -> Preprocessing:
    transform = member.transforms()
    crop = getattr(transform, "crop_size", None)
    resize = getattr(transform, "resize_size", None)
    return Preprocessing(
        tuple(transform.mean),
        tuple(transform.std),
        int(crop[0]) if crop else None,
        what,
        crop_pct=crop[0] / resize[0] if crop and resize else None,  # 224 of 256: 0.875
    )


def _filename(member: Any) -> str:
    return Path(urlparse(member.url).path).name


def resnet_layers(model: Any, prefix: str = "", head: str | None = "fc") -> list:
    """stem (conv1, bn1), layer1..layer4, head: seed 000's view of a ResNet."""
    layers = [("stem", [prefix + "conv1", prefix + "bn1"], BACKBONE)]
    layers += [(f"layer{i}", [f"{prefix}layer{i}"], BACKBONE) for i in range(1, 5)]
    if head:
        layers.append(("head", [prefix + head], HEAD))
    return layers


def _is(model: Any, *names: str) -> bool:
    import torchvision.models as tvm

    return isinstance(model, tuple(getattr(tvm, n) for n in names))


def _anatomy(model: Any) -> Anatomy:
    if _is(model, "ResNet"):
        return from_prefixes(model, resnet_layers(model), "torchvision-resnet")
    if _is(model, "VisionTransformer"):
        blocks = [f"encoder.layers.{name}" for name, _ in model.encoder.layers.named_children()]
        layers = [("embed", ["class_token", "conv_proj", "encoder.pos_embedding"], BACKBONE)]
        # The final norm goes with the last block, as timm groups a ViT.
        layers += [(f"block{i}", [b], BACKBONE) for i, b in enumerate(blocks[:-1])]
        layers += [
            (f"block{len(blocks) - 1}", [blocks[-1], "encoder.ln"], BACKBONE),
            ("head", ["heads"], HEAD),
        ]
        return from_prefixes(model, layers, "torchvision-vit")
    # MobileNet, EfficientNet, ConvNeXt, Swin, DenseNet: the stage modules in
    # ``features`` (features.N; DenseNet's features.denseblockN, transitionN),
    # then what follows them (Swin's final norm), the last child the classifier.
    children = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    layers = [
        (f"features.{n}", [f"features.{n}"], BACKBONE)
        for n, m in model.features.named_children()
        if any(True for _ in m.parameters())
    ]
    layers += [(n, [n], BACKBONE) for n in children[:-1] if n != "features"]
    layers.append(("head", [children[-1]], HEAD))
    return from_prefixes(model, merge_norms(model, layers), "torchvision-features")


def _matches(model: Any) -> bool:
    return _is(
        model,
        "ResNet",
        "VisionTransformer",
        "MobileNetV2",
        "MobileNetV3",
        "EfficientNet",
        "ConvNeXt",
        "SwinTransformer",
        "DenseNet",
    )


def split(model: Any) -> Any:
    """A ResNet up to its pooled features, then ``fc``; a MobileNet or an
    EfficientNet up to its pooled ``features``, then ``classifier``; other
    architectures none."""
    import torch
    import torchvision.models as tvm

    from ftkit.models.split import Split, params_outside

    if isinstance(model, (tvm.MobileNetV2, tvm.MobileNetV3, tvm.EfficientNet)):

        def pooled(x: torch.Tensor) -> torch.Tensor:  # what their forward does before classifier
            return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(model.features(x), 1), 1)

        return Split(model, pooled, model.classifier, params_outside(model, "classifier"))
    if not isinstance(model, tvm.ResNet):
        return None

    def trunk(x: torch.Tensor) -> torch.Tensor:
        m = model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return torch.flatten(m.avgpool(x), 1)

    return Split(model, trunk, model.fc, params_outside(model, "fc"))


@hookimpl
def ftkit_register_models(register):
    register(ModelFamily("tv", build, named_weights, preprocessing, split=split))


@hookimpl
def ftkit_register_anatomies(register):
    register(AnatomyProvider("torchvision", _matches, _anatomy, priority=10))
