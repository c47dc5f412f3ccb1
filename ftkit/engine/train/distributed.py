"""Multi-process training on PyTorch's own engine: ``torchrun --nproc_per_node
N -m ftkit run ...`` runs DistributedDataParallel (gloo on the CPU, NCCL on
CUDA). Every rank sees its share of each global batch; metrics are reduced
across ranks (confusion matrices summed), so every decision (early stopping,
guards, skipped steps) comes out the same on every rank. Only rank 0 writes.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, Sampler

from ftkit.resolve import pick_device


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place."""
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor

    def any(self, *flags: bool) -> list[bool]:
        """For each flag, whether it is true on some rank (one collective)."""
        if not self.enabled:
            return list(flags)
        tensor = torch.tensor([float(f) for f in flags], device=_collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return [bool(v) for v in tensor.tolist()]

    def from_main(self, value: Any) -> Any:
        """Rank 0's value of ``value``, on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def setup(device: str) -> tuple[World, torch.device]:
    """The process's rank and device; initialises the process group under torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), pick_device(device)
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return World(dist.get_rank(), size), torch.device("cuda", local)
    return World(dist.get_rank(), size), torch.device("cpu")


class LossFlag:
    """Carries a rank's non-finite loss to every rank in the gradients' own
    all-reduce (a DDP communication hook), not in a collective of its own: a
    rank whose loss was not finite adds NaN to each gradient bucket it sends,
    so every rank's summed gradient norm is NaN and every rank skips the step."""

    def __init__(self) -> None:
        self.process_group = None  # the default group
        self.poison: torch.Tensor | None = None

    def mark(self, pending: torch.Tensor) -> None:
        """Before a backward: ``pending`` (a device bool) is this rank's loss flag."""
        self.poison = torch.where(pending, torch.nan, 0.0)

    @staticmethod
    def hook(state: LossFlag, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        if state.poison is not None:
            bucket.buffer().add_(state.poison.to(bucket.buffer().dtype))
        return allreduce_hook(state.process_group, bucket)  # type: ignore[arg-type]


# DDP checks a hook's annotations as objects; ``from __future__ import annotations`` made strings
LossFlag.hook.__annotations__.update(
    {"bucket": dist.GradBucket, "return": torch.futures.Future[torch.Tensor]}
)


def wrap(
    model: torch.nn.Module, world: World, device: torch.device
) -> tuple[torch.nn.Module, LossFlag | None]:
    """The module to call for training: DDP over the parameters that train now,
    with its ``LossFlag``. DDP fixes its parameter set when built, so a stage
    change wraps again."""
    if not world.enabled or not any(p.requires_grad for p in model.parameters()):
        return model, None
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    ddp = DistributedDataParallel(model, device_ids=ids)
    flag = LossFlag()
    ddp.register_comm_hook(flag, LossFlag.hook)
    return ddp, flag


def shutdown(world: World, finished: bool) -> None:
    """Leave the process group. The run's DDP wrappers hold the group's worker
    threads: they are freed first (``gc.collect``), so no thread outlives the
    group or meets a finalising interpreter (a SIGABRT, "terminate called without
    an active exception"). A finished run also waits at a barrier, so no rank
    tears down while another still reduces; a failed one does not (the other
    ranks may never come, and torchrun stops them once this one exits)."""
    if world.enabled and dist.is_initialized():
        gc.collect()
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's shuffle and augmentation: a function of (seed,
    epoch) alone, so a resumed or replayed epoch draws exactly the same."""
    return seed * 100_003 + epoch


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation in one epoch: the same in the
    training process and in any loader worker, so workers change speed,
    never results."""
    return (epoch_seed(seed, epoch) * 1_000_003 + index) % 2**63


class EpochSampler(Sampler[Any]):
    """A shuffle that is a function of (seed, epoch), able to start mid-epoch
    (a resumed run replays exactly the batches the interrupted one would
    have), and shared out by stride: with N ranks of batch B, the global batch
    is the same B x N samples a single process with batch B x N would take.
    ``keyed``: yield ``(index, sample_seed)`` for a dataset that seeds each
    sample's augmentation (``SampleDataset``), not the bare index."""

    def __init__(self, size: int, seed: int, world: World = World(), keyed: bool = False) -> None:
        self.size, self.seed, self.world, self.keyed = size, seed, world, keyed
        self.epoch = self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[Any]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=g)
        order = order[: len(order) - len(order) % self.world.size]  # equal shares
        mine = order[self.world.rank :: self.world.size][self.skip :].tolist()
        if not self.keyed:
            return iter(mine)
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in mine])

    def __len__(self) -> int:
        return self.size // self.world.size - self.skip


class ShardSampler(Sampler[int]):
    """Validation in order, every sample on exactly one rank (no padding, so
    the reduced metrics equal a single process's)."""

    def __init__(self, size: int, world: World = World()) -> None:
        self.indices = range(world.rank, size, world.size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SameSizeBatches(Sampler[list[int]]):
    """A batch sampler over ``sampler``'s indices whose batches hold items of one
    size: images scored at their own resolution cannot be stacked otherwise. In
    the sampler's order within each size, a batch as soon as one is full."""

    def __init__(self, sampler: Sampler[int], sizes: list[Any], batch_size: int) -> None:
        self.sampler, self.sizes, self.batch_size = sampler, sizes, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        waiting: dict[Any, list[int]] = {}
        for i in self.sampler:
            batch = waiting.setdefault(self.sizes[i], [])
            batch.append(i)
            if len(batch) == self.batch_size:
                yield waiting.pop(self.sizes[i])
        yield from waiting.values()

    def __len__(self) -> int:
        counts: dict[Any, int] = {}
        for i in self.sampler:
            counts[self.sizes[i]] = counts.get(self.sizes[i], 0) + 1
        return sum(-(-n // self.batch_size) for n in counts.values())


def item_sizes(dataset: Any) -> list[Any] | None:
    """Each item's size where the items keep their own (``SampleDataset.sizes``),
    also through a ``ConcatDataset`` (``eval --split all``)."""
    if isinstance(dataset, ConcatDataset):
        parts = [item_sizes(d) for d in dataset.datasets]
        return None if any(p is None for p in parts) else [s for p in parts for s in p or []]
    return dataset.sizes() if hasattr(dataset, "sizes") else None


def scoring_batches(dataset: Any, batch_size: int, sampler: Sampler[int] | None = None) -> Any:
    """DataLoader arguments for scoring ``dataset``: plain batches, or batches of
    one size when its items differ in size."""
    sizes = item_sizes(dataset)
    if sizes is None or len(set(sizes)) < 2:
        return {"batch_size": batch_size, "sampler": sampler}
    order = sampler if sampler is not None else range(len(sizes))
    return {"batch_sampler": SameSizeBatches(order, sizes, batch_size)}  # type: ignore[arg-type]
