"""torchvision classification models: ``tv:NAME`` and their anatomies."""

from __future__ import annotations

from typing import Any

from ftkit.anatomy import BACKBONE, HEAD, Anatomy, AnatomyProvider, from_prefixes
from ftkit.errors import UsageError
from ftkit.models import pick
from ftkit.plugins.manager import hookimpl


def build(name: str, *, num_classes: int, task: str) -> Any:
    import torchvision

    if task != "classification":
        raise UsageError(
            f"tv:{name} is a classification model; for segmentation use "
            f"smp:ARCH:ENCODER, e.g. smp:unet:resnet18"
        )
    pick("torchvision model", name, torchvision.models.list_models(torchvision.models))
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


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
    # MobileNet, EfficientNet, ConvNeXt: features.0..N then a classifier.
    layers = [
        (f"features.{n}", [f"features.{n}"], BACKBONE)
        for n, m in model.features.named_children()
        if any(True for _ in m.parameters())
    ]
    layers.append(("head", ["classifier"], HEAD))
    return from_prefixes(model, layers, "torchvision-features")


def _matches(model: Any) -> bool:
    return _is(
        model,
        "ResNet",
        "VisionTransformer",
        "MobileNetV2",
        "MobileNetV3",
        "EfficientNet",
        "ConvNeXt",
    )


@hookimpl
def ftkit_register_models(register):
    register("tv", build)


@hookimpl
def ftkit_register_anatomies(register):
    register(AnatomyProvider("torchvision", _matches, _anatomy, priority=10))
