"""Checkpoints: written atomically, read without unpickling code.

``last.pt`` holds the full training state (read with ``weights_only=True``,
always); ``best.safetensors`` and every weights file hold tensors only.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ftkit.errors import UsageError, WriteError

LAST, BEST, START = "last.pt", "best.safetensors", "start.safetensors"
FORMAT = "ftkit-checkpoint-1"


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a
    crash leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    existed = path.exists()
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        kept = f"; the previous '{path.name}' is unchanged" if existed else ""
        raise write_error(path, exc, kept) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_error(path: Path, exc: OSError, note: str = "") -> WriteError:
    """One line: the file, why, and the space left where it goes."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:,.0f} MiB free there"
    except OSError:
        free = "free space unknown"
    return WriteError(f"cannot write '{path}': {exc.strerror or exc} ({free}){note}")


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
