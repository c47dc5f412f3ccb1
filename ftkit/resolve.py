"""What the command line names, resolved through the plugins: the model
family of a spec and the model it builds, the weights' preprocessing, the
weights a run starts from, the device, and the loader's workers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ftkit.data.load import is_folder
from ftkit.errors import UsageError, unknown
from ftkit.models.family import ModelFamily, Preprocessing

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ftkit.config import Config
    from ftkit.models.weights import LoadReport
    from ftkit.plan.anatomy import Anatomy
    from ftkit.plugins.manager import Plugins


def model_family(spec: str, plugins: Plugins) -> tuple[ModelFamily, str]:
    """The family of a model spec and the rest of the spec after its prefix."""
    prefix, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise UsageError(
            f"model spec '{spec}' must look like PREFIX:NAME, e.g. "
            f"smp:unet:resnet18, tv:resnet18, timm:vit_tiny_patch16_224; "
            f"prefixes: {', '.join(plugins.models.names())}"
        )
    if prefix not in plugins.models:
        raise unknown("model family", prefix, plugins.models.names())
    return plugins.models.get(prefix), rest


def build_model(spec: str, *, num_classes: int, task: str, plugins: Plugins) -> nn.Module:
    family, rest = model_family(spec, plugins)
    return family.build(rest, num_classes=num_classes, task=task)


def weights_name(config: Config) -> str | None:
    """``--weights`` when it names a library's weights (``imagenet``), not a file."""
    from ftkit.models.weights import looks_like_file

    return config.weights if config.weights and not looks_like_file(config.weights) else None


def preprocessing(config: Config, plugins: Plugins) -> Preprocessing:
    """The normalisation (and input size) of the weights the model starts from."""
    family, rest = model_family(config.model_spec, plugins)
    name = weights_name(config)
    if family.preprocessing is None:
        if name:
            raise UsageError(f"model family '{family.name}' knows no pretrained weights")
        return Preprocessing()
    return family.preprocessing(rest, name)


def load_start_weights(
    config: Config, plugins: Plugins, model: nn.Module, anatomy: Anatomy
) -> LoadReport | None:
    """Load ``--from`` (exactly) or ``--weights`` into the model and report it."""
    from ftkit.models.weights import fit_weights, read_state

    if config.start_from:
        state = read_state(config.start_from)
        return fit_weights(model, anatomy, state, source=config.start_from, exact=True)
    if not config.weights:
        return None
    family, rest = model_family(config.model_spec, plugins)
    name = weights_name(config)
    if name is None:
        state, source = read_state(config.weights), config.weights
    elif family.named_weights is None:
        raise UsageError(f"model family '{family.name}' knows no pretrained weights")
    else:
        named = family.named_weights(rest, name)
        state, source = named.state, named.source
    return fit_weights(model, anatomy, state, source=source, convert=family.convert)


def pick_device(name: str) -> torch.device:
    """``--device``: a device this machine has, or one line saying why not."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(
            f"--device: unknown device '{name}'; use cpu, cuda, cuda:N, mps or auto"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS (Apple GPU) is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: not supported; use cpu, cuda, cuda:N, mps or auto")
    return device


MAX_AUTO_WORKERS = 8
PREFETCH_FACTOR = 2  # batches each worker keeps ready (torch's default, stated)


@dataclass(frozen=True)
class LoaderSettings:
    workers: int
    pin_memory: bool
    why: str  # how --workers came to this number

    def line(self) -> str:
        """What ``ftkit plan`` prints."""
        prefetch = f", {PREFETCH_FACTOR} batches ahead each" if self.workers else ""
        return (
            f"loader: {self.workers} worker process(es) ({self.why}){prefetch}, "
            f"pin_memory {'on' if self.pin_memory else 'off'}"
        )


def loader_settings(config: Config, device_type: str, world_size: int = 1) -> LoaderSettings:
    """``--workers auto``: Lightning's rule for data read from files (the cores
    this process may use, shared among the node's ranks, one left for the
    training process; at most 8), none for an in-memory built-in set."""
    pin = device_type == "cuda"
    if config.workers != "auto":
        return LoaderSettings(int(config.workers), pin, "--workers")
    if not is_folder(config.data):
        return LoaderSettings(0, pin, "auto: in-memory data")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    workers = min(MAX_AUTO_WORKERS, max(0, (cores or 1) // max(local, 1) - 1))
    return LoaderSettings(workers, pin, f"auto: {cores} cores / {local} rank(s) - 1")
