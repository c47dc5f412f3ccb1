"""segmentation-models-pytorch: ``smp:ARCH:ENCODER``. The encoder stages are
the backbone; decoder and segmentation head are the head (seed 004's
"classifier")."""

from __future__ import annotations

from typing import Any

from ftkit.anatomy import BACKBONE, HEAD, Anatomy, AnatomyProvider, from_prefixes
from ftkit.errors import UsageError
from ftkit.models import pick
from ftkit.models.generic import child_layers
from ftkit.models.torchvision import resnet_layers
from ftkit.plugins.manager import hookimpl


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


def _anatomy(model: Any) -> Anatomy:
    import torchvision.models as tvm

    if isinstance(model.encoder, tvm.ResNet):
        encoder = resnet_layers(model.encoder, "encoder.", head=None)
    else:
        encoder = child_layers(model.encoder, "encoder.", BACKBONE)
    head = [
        (name, [name], HEAD)
        for name in ("decoder", "segmentation_head", "classification_head")
        if getattr(model, name, None) is not None
    ]
    return from_prefixes(model, [*encoder, *head], "smp")


def _matches(model: Any) -> bool:
    return type(model).__module__.startswith("segmentation_models_pytorch.")


@hookimpl
def ftkit_register_models(register):
    register("smp", build)


@hookimpl
def ftkit_register_anatomies(register):
    register(AnatomyProvider("smp", _matches, _anatomy, priority=10))
