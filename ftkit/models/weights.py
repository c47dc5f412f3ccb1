"""Starting weights: read the checkpoints users have, fit them to the model,
and say in one line what went where.

A file may be a plain or wrapped state dict (``{"state_dict": ...}``,
``{"model": ...}``, ``module.``/``model.``/``_orig_mod.`` prefixes, a
Lightning checkpoint), safetensors, an ftkit run directory or its weights, or
a classification checkpoint of the encoder's architecture loaded backbone-only
into a segmentation model. Everything is read with ``weights_only=True`` or
from safetensors: nothing a file holds can run code.

Pretrained weights may differ from the model only in its head: a head tensor
of another shape (``--num-classes``) is re-initialised, a head the file lacks
starts fresh, a classifier the encoder has no place for is dropped; each is
named in the report. A backbone tensor missing, unexpected or of another shape
is an error, so nothing loads partially in silence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ftkit.checkpoint import BEST, FORMAT, load_error, safe_torch_load
from ftkit.errors import UsageError
from ftkit.plan.anatomy import Anatomy

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.", "net.")
# A classification checkpoint goes into a segmentation model's encoder here
# (smp: ``encoder.``; its timm universal encoders: ``encoder.model.``).
BACKBONE_PREFIXES = ("encoder.", "encoder.model.")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar")


def looks_like_file(spec: str) -> bool:
    """``--weights`` is a file when it exists or is spelled like one, else a name."""
    return Path(spec).exists() or "/" in spec or spec.lower().endswith(WEIGHT_SUFFIXES)


# --- reading ------------------------------------------------------------------


def weights_file(path: str | Path) -> Path:
    """The file that ``read_state(path)`` reads: ``path``, or a run directory's best weights."""
    path = Path(path)
    if path.is_dir():
        best = path / "checkpoints" / BEST
        if not best.is_file():
            raise UsageError(f"'{path}' has no {best.relative_to(path)}; is it an ftkit run?")
        path = best
    if not path.is_file():
        raise UsageError(f"weights file '{path}' not found")
    return path


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file or an ftkit run directory (its best weights)."""
    path = weights_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UsageError(f"weights file '{path}' is corrupt: {exc}") from None
    try:
        data = safe_torch_load(path)
    except Exception as exc:
        raise UsageError(
            f"weights file '{path}' is corrupt or not a state dict ({load_error(exc)})"
        ) from None
    state = unwrap(data)
    if state is None:
        raise UsageError(f"weights file '{path}' does not hold a state dict of tensors")
    return state


def unwrap(data: Any) -> dict[str, torch.Tensor] | None:
    """The state dict inside the containers training code saves it in."""
    if isinstance(data, dict) and data.get("format") == FORMAT:
        data = data["model"]  # an ftkit last.pt
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        if not isinstance(data, dict) or _is_state(data):
            break
        inner = next((data[k] for k in WRAPPER_KEYS if isinstance(data.get(k), dict)), None)
        if inner is None:
            break
        data = inner
    if not isinstance(data, dict) or not _is_state(data):
        return None
    # Lightning keeps loop counters and such beside the weights: tensors only.
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def _is_state(data: dict[Any, Any]) -> bool:
    return (
        bool(data)
        and all(isinstance(k, str) for k in data)
        and any(isinstance(v, torch.Tensor) for v in data.values())
    )


# --- fitting ------------------------------------------------------------------


@dataclass
class LoadReport:
    source: str
    backbone: int = 0
    head: int = 0
    reinitialised: list[str] = field(default_factory=list)  # head tensors of another shape
    fresh: int = 0  # model tensors the file has none for (a new head or decoder)
    dropped: list[str] = field(default_factory=list)  # the file's classifier

    @property
    def head_is_new(self) -> bool:
        return bool(self.reinitialised or self.fresh)

    def line(self) -> str:
        parts = [f"{self.backbone} tensors into the backbone, {self.head} into the head"]
        if self.reinitialised:
            parts.append(
                f"re-initialised {len(self.reinitialised)} head tensors for --num-classes "
                f"({_keys(self.reinitialised)})"
            )
        if self.fresh:
            parts.append(f"{self.fresh} head tensors not in the file start fresh")
        if self.dropped:
            parts.append(f"dropped the file's {_keys(self.dropped)}")
        return f"weights from {self.source}: " + "; ".join(parts)


def fit_weights(
    model: torch.nn.Module,
    anatomy: Anatomy,
    state: dict[str, torch.Tensor],
    *,
    source: str,
    exact: bool = False,
    convert: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None,
) -> LoadReport:
    """Load ``state`` into ``model`` and report it; see the module docstring.

    ``exact`` (a converged baseline for ``--from``, a checkpoint to evaluate)
    requires every tensor to match, head included.
    """
    own = model.state_dict()
    state = _align(state, own)
    if convert is not None and not exact:
        state = convert(state, model)
    prefix = "" if exact else _backbone_prefix(state, own)
    state = {prefix + k: v for k, v in state.items()}
    in_head = _head_test(anatomy)
    report = LoadReport(source)

    shapes = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if prefix:
        # Backbone-only: what the encoder has no module for is the file's classifier.
        report.dropped, unexpected = _split_dropped(unexpected, own, prefix)
    problems = []
    bad_shapes = [k for k in shapes if exact or not in_head(k)]
    if bad_shapes:
        problems.append(
            "shapes differ: "
            + _keys(bad_shapes, lambda k: f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        )
    bad_missing = [k for k in missing if exact or not in_head(k)]
    if bad_missing:
        problems.append(f"missing {len(bad_missing)} tensors: {_keys(bad_missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensors: {_keys(unexpected)}")
    if problems:
        hint = (
            "check --model and --num-classes"
            if exact
            else "the weights must be of the model's architecture; check --model"
        )
        raise UsageError(f"'{source}' does not fit the model ({'; '.join(problems)}; {hint})")

    load = {k: v for k, v in state.items() if k in own and k not in shapes}
    model.load_state_dict(load, strict=False)
    for key in load:
        if in_head(key):
            report.head += 1
        else:
            report.backbone += 1
    report.reinitialised = shapes
    report.fresh = len(missing)
    return report


def _align(state: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """Strip wrapper prefixes (DDP's ``module.``, Lightning's ``model.``, ...)
    while every key has one and the model has no key with it."""
    while True:
        prefix = next(
            (
                p
                for p in WRAPPER_PREFIXES
                if all(k.startswith(p) for k in state) and not any(k.startswith(p) for k in own)
            ),
            None,
        )
        if prefix is None:
            return state
        state = {k[len(prefix) :]: v for k, v in state.items()}


def _backbone_prefix(state: dict[str, Any], own: dict[str, Any]) -> str:
    """The prefix under which the file's keys fit the model best ('' as a rule)."""
    best, best_hits = "", sum(k in own for k in state)
    for prefix in BACKBONE_PREFIXES:
        hits = sum(prefix + k in own for k in state)
        if hits > best_hits:
            best, best_hits = prefix, hits
    return best


def _split_dropped(
    unexpected: list[str], own: dict[str, Any], prefix: str
) -> tuple[list[str], list[str]]:
    """Unexpected keys under a module the encoder does not have at all (smp
    deletes the classifier; timm's features_only drops the head) are dropped."""
    modules = {k[len(prefix) :].split(".")[0] for k in own if k.startswith(prefix)}
    dropped = [k for k in unexpected if k[len(prefix) :].split(".")[0] not in modules]
    return [k[len(prefix) :] for k in dropped], [k for k in unexpected if k not in dropped]


def _head_test(anatomy: Anatomy) -> Callable[[str], bool]:
    """Whether a state-dict key (parameter or buffer) belongs to the head."""
    head_modules = {p.rpartition(".")[0] for p in anatomy.params_of(anatomy.head)}
    return lambda key: key.rpartition(".")[0] in head_modules


def _keys(keys: list[str], show: Any = str, limit: int = 3) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(show(k) for k in keys[:limit]) + more
