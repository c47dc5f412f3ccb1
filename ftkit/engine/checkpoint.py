"""Checkpoints: written atomically, read without unpickling code.

``last.pt`` holds the full training state (read with ``weights_only=True``,
always); ``best.safetensors`` and every weights file hold tensors only.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ftkit.errors import UsageError

LAST, BEST = "last.pt", "best.safetensors"
FORMAT = "ftkit-checkpoint-1"


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a
    crash leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


def save_state(path: Path, state: dict[str, Any]) -> None:
    if not all_finite(state["model"]):
        raise RuntimeError("refusing to write a checkpoint with non-finite weights")
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_state(path: Path) -> dict[str, Any]:
    """Load ``last.pt``; only tensors and plain containers can come back."""
    if not path.is_file():
        raise UsageError(f"checkpoint '{path}' not found")
    try:
        state = safe_torch_load(path)
    except Exception as exc:
        raise UsageError(
            f"checkpoint '{path}' is corrupt or not an ftkit checkpoint ({load_error(exc)})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UsageError(f"checkpoint '{path}' is not an ftkit checkpoint")
    return state


def safe_torch_load(path: Path) -> Any:
    """torch.load that never runs code: weights_only=True, passed explicitly,
    which wins over TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD in the environment."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about pickle protocols
        return torch.load(path, map_location="cpu", weights_only=True)


def load_error(exc: Exception) -> str:
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it asks to run {found[1]}, which a weights-only load refuses"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:160]


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    if not all_finite(state):
        raise RuntimeError("refusing to write weights that are not finite")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file, a state dict (weights only), an ftkit
    ``last.pt`` or a run directory (its best weights)."""
    path = Path(path)
    if path.is_dir():
        best = path / "checkpoints" / BEST
        if not best.is_file():
            raise UsageError(f"'{path}' has no {best.relative_to(path)}; is it an ftkit run?")
        path = best
    if not path.is_file():
        raise UsageError(f"weights file '{path}' not found")
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
    if isinstance(data, dict) and data.get("format") == FORMAT:
        data = data["model"]
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UsageError(f"weights file '{path}' does not hold a state dict of tensors")
    return data


def load_weights(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    *,
    source: str,
    head: tuple[str, ...] = (),
    strict: bool = False,
) -> list[str]:
    """Copy ``state`` into ``model`` and return notes on what did not match.

    Pretrained weights (not ``strict``) may differ in the head, which
    ``--num-classes`` replaces, and may miss or add keys. A converged baseline
    (``strict``) must match key for key. Anything else is one error naming
    the keys and shapes.
    """
    own = model.state_dict()
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    fatal_shapes = [k for k in mismatched if strict or k not in set(head)]
    problems = []
    if fatal_shapes:
        problems.append(
            "shapes differ: "
            + _keys(fatal_shapes, lambda k: f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        )
    if strict and missing:
        problems.append(f"missing {len(missing)} keys: {_keys(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {_keys(unexpected)}")
    if problems:
        raise UsageError(
            f"'{source}' does not fit the model ({'; '.join(problems)}; "
            f"checkpoint vs model: check --model and --num-classes)"
        )
    model.load_state_dict(
        {k: v for k, v in state.items() if k in own and k not in mismatched}, strict=False
    )
    notes = []
    if mismatched:
        notes.append(f"replaced head tensors: {_keys(mismatched)}")
    if missing:
        notes.append(f"missing keys (left as initialised): {_keys(missing)}")
    if unexpected:
        notes.append(f"unexpected keys (ignored): {_keys(unexpected)}")
    return notes


def _keys(keys: list[str], show: Any = str, limit: int = 3) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(show(k) for k in keys[:limit]) + more
