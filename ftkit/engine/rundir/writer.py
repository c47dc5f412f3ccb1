"""Checkpoint files written off the training thread.

``Writer.write(state, save)`` stages ``state`` (a copy training cannot change:
tensors copied to the CPU, into pinned buffers allocated once on CUDA, queued
on the device's stream behind the step that made them; containers rebuilt) and
then runs ``save(staged)`` (serialise, fsync, rename) on one background thread,
overlapping the next epoch. A new write, the run's end and an interrupt wait
for the one in flight first, so at most one is in flight and each file is
always the last complete one (``ftkit.checkpoint.atomic_write``). A failed
write raises its ``WriteError`` at that wait.

``background=False`` runs ``save`` in the caller, unstaged: the choice on
machines where a second thread competes with training for the cores
(``--checkpoint-writer``, docs/performance.md).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch


class Writer:
    def __init__(self, background: bool) -> None:
        self.pool = ThreadPoolExecutor(1, "ftkit-checkpoint") if background else None
        self.pending: Future[None] | None = None
        self.pinned: dict[tuple[Any, ...], torch.Tensor] = {}  # CUDA staging buffers, by place

    def write(self, state: Any, save: Callable[[Any], None]) -> None:
        self.wait()  # the staging buffers are free again, and the previous file complete
        if self.pool is None:
            save(state)
            return
        seen: dict[Any, torch.Tensor] = {}
        staged, ready = self.stage(state, (), seen), None
        if any(device.type == "cuda" for device, *_ in seen):
            ready = torch.cuda.Event()
            ready.record()  # the copies are queued on the stream: the thread waits for them

        def job() -> None:
            if ready is not None:
                ready.synchronize()
            save(staged)

        self.pending = self.pool.submit(job)

    def wait(self) -> None:
        """Until the write in flight is on disk; its error, if it failed."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self.pool is not None:
                self.pool.shutdown()

    def stage(self, value: Any, place: tuple[Any, ...], seen: dict[Any, torch.Tensor]) -> Any:
        """``value`` copied; a tensor met twice (``last``'s weights are also
        ``best``'s) is copied once."""
        if isinstance(value, torch.Tensor):
            key = (value.device, value.data_ptr(), value.shape, value.stride(), value.dtype)
            if key not in seen:
                seen[key] = self._copy(value.detach(), place)
            return seen[key]
        if isinstance(value, dict):
            return {k: self.stage(v, (*place, k), seen) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.stage(v, (*place, i), seen) for i, v in enumerate(value))
        return copy.deepcopy(value)

    def _copy(self, tensor: torch.Tensor, place: tuple[Any, ...]) -> torch.Tensor:
        if not tensor.is_cuda:
            return tensor.clone()
        buffer = self.pinned.get(place)
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            buffer = self.pinned[place] = torch.empty(
                tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=True
            )
        return buffer.copy_(tensor, non_blocking=True)


def background_writer(choice: str, device: torch.device) -> bool:
    """``--checkpoint-writer``: auto writes in the background on CUDA, where the
    host thread is idle while the GPU trains; on a CPU the writer competes with
    training for the same cores (docs/performance.md has the figures)."""
    return choice == "async" or (choice == "auto" and device.type == "cuda")
