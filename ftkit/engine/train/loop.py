"""The training loop: one epoch of steps, and one evaluation.

Read it top to bottom like nanoGPT's train.py. Every step computes the total
gradient norm (logged, optionally clipped); a step whose loss or gradient is
not finite is skipped with the weights untouched. Neither needs the host: the
figures are tallied on the device (``tally.py``) and read every ``log_every``
steps, and the skip is the optimizer's own ``found_inf`` (the tensor GradScaler
hands fused Adam, AdamW and SGD), so a GPU step never waits for the CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ftkit.engine.train import distributed
from ftkit.engine.train.distributed import World
from ftkit.engine.train.ema import Ema
from ftkit.engine.train.guards import GradNormAlert, NonFinite
from ftkit.engine.train.sliding import SlidingWindow
from ftkit.engine.train.staging import set_lr
from ftkit.engine.train.tally import EpochProgress, Tally
from ftkit.errors import UsageError
from ftkit.plan.schedule import lr_factor
from ftkit.plan.stages import Stage
from ftkit.tasks import Task


class NonFiniteStop(Exception):
    """Too many non-finite steps in a row."""


@dataclass
class Loop:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    accumulate: int = 1
    amp: str = "off"
    clip_grad_norm: float | None = None
    alert: GradNormAlert = field(default_factory=lambda: GradNormAlert(10.0))
    nonfinite: NonFinite = field(default_factory=lambda: NonFinite(5))
    scaler: Any = None
    progress: EpochProgress | None = None  # the epoch in progress, if any
    world: World = field(default_factory=World)
    net: Callable[..., Any] | None = None  # what training calls: model, DDP or cached head
    channels_last: bool = False
    compile: bool = False
    anchors: dict[Any, torch.Tensor] = field(default_factory=dict)  # param -> start (L2-SP)
    ema: Ema | None = None  # --ema
    window: tuple[int, int] | None = None  # --eval-mode slide: the window scored at a time
    mix: Callable[[Any, torch.Tensor], tuple[Any, torch.Tensor]] | None = None  # MixUp/CutMix
    log_every: int = 20  # --log-every: optimizer steps between reads of the tally
    loss_flag: distributed.LossFlag | None = None  # under DDP: a rank's NaN loss, to all ranks

    def __post_init__(self) -> None:
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")

    def batch(self, x: Any, y: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """A training batch on the device, mixed by MixUp/CutMix when asked
        (``mix``): here, in the training process, on its RNG, so the batches
        are the same whatever the loader's workers (timm mixes here too)."""
        x, y = self.to_device(x), y.to(self.device, non_blocking=True)
        return self.mix(x, y) if self.mix is not None else (x, y)

    def to_device(self, x: Any) -> Any:
        """A batch of images, or of cached features (a list of tensors)."""
        if isinstance(x, (list, tuple)):
            return [t.to(self.device, non_blocking=True) for t in x]
        if self.channels_last and x.dim() == 4:
            return x.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        return x.to(self.device, non_blocking=True)

    def wrap(self) -> None:
        """Build what training calls, after the trainable parameters changed."""
        net, self.loss_flag = distributed.wrap(self.model, self.world, self.device)
        self.net = torch.compile(net) if self.compile else net

    def autocast(self) -> Any:
        return autocast(self.amp, self.device)

    def train_epoch(
        self,
        loader: Iterable[Any],
        loss_fn: Callable[..., torch.Tensor],
        stage: Stage,
        stage_step: int,
        steps_per_epoch: int,
        on_batch: Callable[[float, int], None] | None = None,
        interrupted: Callable[[], bool] = lambda: False,
    ) -> EpochProgress:
        """Train for one epoch, or the rest of the one in progress.

        ``stage_step`` is the optimizer step within the stage at which the
        epoch started (the schedule's clock); ``loader`` yields the batches
        not yet consumed. Returns early, with ``complete`` False, when
        ``interrupted()`` turns true at a step boundary.
        """
        total_steps = stage.epochs * steps_per_epoch
        warmup = round(stage.warmup_epochs * steps_per_epoch)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        epoch = self.progress = self.progress or EpochProgress()
        tally = Tally(self.device, epoch, self.alert, self.nonfinite)
        start, stop = time.perf_counter(), False
        self.optimizer.zero_grad(set_to_none=True)
        net = self.net or self.model
        for batch in loader:
            x, y = self.batch(*batch)
            with self.autocast():
                loss = loss_fn(net(x), y)
            tally.add_loss(loss)
            if self.loss_flag is not None:
                self.loss_flag.mark(tally.pending)
            # Backward even a non-finite loss: under DDP every rank must join the
            # gradient all-reduce. The step is skipped below, the weights untouched.
            self.scaler.scale(loss / self.accumulate).backward()
            epoch.batches += 1
            epoch.images += len(y)
            if on_batch:  # per batch, so the bar and images/s count every batch
                on_batch(epoch.loss, len(y))  # the loss as of the last read
            if epoch.batches % self.accumulate:
                continue  # a trailing partial accumulation is dropped with the epoch
            factor = lr_factor(stage.schedule, stage_step + epoch.steps, total_steps, warmup)
            self.step(params, tally, factor)
            epoch.steps += 1
            if epoch.steps % self.log_every == 0:
                stop = self.read(tally, epoch, interrupted)
            elif not self.world.enabled:
                stop = interrupted()  # a flag of this process: no rank to agree with
            if stop:
                break
        else:
            epoch.complete = True
        # the epoch's figures, and (under DDP) the ranks' agreement on a signal that
        # came since the last read: the epoch then stops here, as at any step boundary
        if self.read(tally, epoch, interrupted):
            epoch.complete = False
        epoch.seconds += time.perf_counter() - start
        if epoch.complete:
            self.progress = None
        return epoch

    def read(self, tally: Tally, epoch: EpochProgress, interrupted: Callable[[], bool]) -> bool:
        """The tally on the host, the guards' verdicts, and whether to stop: every
        rank agrees on an interrupt here, in one collective every ``log_every``
        steps rather than one a step."""
        if tally.read(epoch, self.alert, self.nonfinite):
            raise NonFiniteStop(f"{self.nonfinite.limit} non-finite steps in a row")
        return self.world.any(interrupted())[0]

    def step(self, params: list[torch.Tensor], tally: Tally, factor: float) -> None:
        """One optimizer step with every group at ``factor`` times its plan LR,
        skipped when a loss of it (``tally.pending``) or its gradient norm is not
        finite: decided on the device where the optimizer takes ``found_inf``."""
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in params if p.grad is not None]
        norm = (
            torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        )
        skip = tally.pending.to(norm.device)
        if not self.scaler.is_enabled():  # fp16: GradScaler skips an overflow itself
            skip = skip | ~torch.isfinite(norm)
        if self.clip_grad_norm is not None:  # a non-finite norm makes NaNs of a skipped step
            torch.nn.utils.clip_grads_with_norm_(params, self.clip_grad_norm, norm)
        set_lr(self.optimizer, factor)
        taken = ~skip
        if self.scaler.is_enabled() or not skips_on_device(self.optimizer):
            # a host sync: GradScaler's own path, or an optimizer without found_inf
            if not bool(skip):
                scale = self.scaler.get_scale() if self.scaler.is_enabled() else 0.0
                self.scaler.step(self.optimizer)
                self.scaler.update()
                # a lowered fp16 scale: GradScaler skipped the step (a sync, with fp16 only)
                taken = torch.tensor(self.scaler.get_scale() >= scale, device=self.device)
        else:
            self.optimizer.found_inf = skip.float()  # type: ignore[attr-defined]
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # type: ignore[attr-defined]
        if self.anchors:
            self.pull_to_start(taken)
        if self.ema is not None:
            self.ema.update(self.model, taken)
        self.optimizer.zero_grad(set_to_none=True)
        tally.add_step(norm, skip)

    @torch.no_grad()
    def pull_to_start(self, taken: torch.Tensor) -> None:
        """L2-SP, decoupled as AdamW decouples weight decay: each pulled weight
        moves ``lr * l2sp`` of the way back to its starting value, if the step
        was ``taken`` (a device bool)."""
        on = taken.float()
        for group in self.optimizer.param_groups:
            if group.get("l2sp"):
                weight = on * (group["lr"] * group["l2sp"])
                for p in group["params"]:
                    if p in self.anchors:  # a new head's biases are not pulled
                        p.lerp_(self.anchors[p], weight)

    def evaluate(
        self,
        loader: Iterable[Any],
        loss_fn: Callable[..., torch.Tensor],
        task: Task,
        num_classes: int,
        keep: int = 4,
    ) -> tuple[dict[str, Any], list[Any]]:
        """``evaluate`` with this loop's model, device, precision and ranks."""
        return evaluate(
            self.model, loader, loss_fn, task, num_classes, self.device, self.amp, self.world, keep,
            window=self.window,
        )  # fmt: skip

    def mean_loss(self, progress: EpochProgress) -> float:
        """The epoch's mean training loss over every rank."""
        totals = torch.tensor(
            [progress.loss_sum, progress.loss_count], dtype=torch.float64, device=self.device
        )
        self.world.sum(totals)
        return float(totals[0] / totals[1]) if totals[1] else math.nan

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "alert": vars(self.alert).copy(),
            "nonfinite": vars(self.nonfinite).copy(),
            "progress": vars(self.progress).copy() if self.progress else None,
            "ema": self.ema.state_dict() if self.ema else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # torch takes the saved groups' keys; the names are the plan's (a `last`
        # from before 0.2 spelled them "group" and "name")
        names = [(g["name"], g["label"]) for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, (name, label) in zip(self.optimizer.param_groups, names, strict=True):
            group.pop("group", None)
            group["name"], group["label"] = name, label
        if state["scaler"]:  # empty when fp16 was off
            self.scaler.load_state_dict(state["scaler"])
        vars(self.alert).update(state["alert"])
        vars(self.nonfinite).update(state["nonfinite"])
        self.progress = EpochProgress.from_state(state["progress"]) if state["progress"] else None
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``found_inf`` skips a step of ``optimizer`` on the device, as
    GradScaler relies on: fused Adam, AdamW and SGD. A skipped first step of
    fused SGD with momentum would leave its new buffers unset, so that step is
    decided on the host."""
    if not getattr(optimizer, "_step_supports_amp_scaling", False):
        return False
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return True
    if not isinstance(optimizer, torch.optim.SGD):
        return False
    return all(
        "momentum_buffer" in optimizer.state[p]
        for g in optimizer.param_groups
        if g["momentum"]
        for p in g["params"]
        if p.grad is not None
    )


def anchors(
    model: nn.Module, anchored: frozenset[str], start: dict[str, torch.Tensor], device: torch.device
) -> dict[Any, torch.Tensor]:
    """What L2-SP pulls each of ``anchored`` towards: its value in ``start``."""
    return {p: start[n].to(device) for n, p in model.named_parameters() if n in anchored}


def autocast(amp: str, device: torch.device) -> Any:
    """``--amp``: off, or autocast to bf16 or fp16."""
    if amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    loss_fn: Callable[..., torch.Tensor],
    task: Task,
    num_classes: int,
    device: torch.device,
    amp: str = "off",
    world: World = World(),
    keep: int = 4,
    tta: str = "none",
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    window: tuple[int, int] | None = None,
) -> tuple[dict[str, Any], list[Any]]:
    """Validation loss and metrics, plus a few (image, target, prediction)
    samples for the loggers. Needs no optimizer: ``ftkit eval`` calls it too,
    with ``tta`` (see ``predict``) and ``on_batch(logits, target)`` to keep
    the logits it scored (calibration), and ``window`` to score segmentation
    by sliding windows of that size (``ftkit.engine.train.sliding``)."""
    model.eval()
    net = SlidingWindow(model, window) if window else model
    metrics = task.make_metrics(num_classes, device)
    # loss summed over samples, and the sample count: summed over ranks at the end
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    samples: list[Any] = []
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # no-op if there
        with autocast(amp, device):
            views = [at_mask_size(v, y) for v in predict(net, x, task, tta)]
            logits = views[0] if len(views) == 1 else mean_softmax(views)
            # each view's own loss, averaged: right for any loss (a sigmoid-based
            # focal loss would misread the averaged log-probabilities)
            loss = sum(loss_fn(v, y).double() for v in views) / len(views)
            totals[0] += loss * x.shape[0]
        totals[1] += x.shape[0]
        metrics.update(logits.float(), y)
        if on_batch:
            on_batch(logits.float(), y)
        if len(samples) < keep:
            preds = logits.argmax(1)
            shown = at_mask_size(x, y) if isinstance(x, torch.Tensor) else x
            samples += [
                (shown[j].cpu(), y[j].cpu(), preds[j].cpu())
                for j in range(min(keep - len(samples), x.shape[0]))
            ]
    # Every rank saw a share of the split: sum the counts before computing.
    world.sum(metrics.state)
    world.sum(totals)
    result = {f"val_{k}": v for k, v in metrics.compute().items()}
    result["val_loss"] = float(totals[0] / totals[1].clamp(min=1))
    return result, samples


def at_mask_size(maps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Segmentation logits (or images) resized, bilinear, to their masks' size: an
    image shown to the model at its base size is scored at its original
    resolution, as MMSegmentation scores it. Anything else as it is."""
    if not (maps.dim() == 4 and target.dim() == 3 and maps.shape[-2:] != target.shape[-2:]):
        return maps
    return nn.functional.interpolate(
        maps.float(), size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False
    )


TTA = ("none", "flip")


def predict(model: nn.Module, x: Any, task: Task, tta: str = "none") -> list[torch.Tensor]:
    """The model's logits, one tensor per view: ``x`` itself, and with
    ``tta="flip"`` ``x`` flipped left-right too (a segmentation output flipped
    back onto ``x``'s pixels)."""
    if tta not in TTA:
        raise ValueError(f"tta must be one of {TTA}, got {tta!r}")
    logits = model(x)
    if tta == "none":
        return [logits]
    if not (isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point()):
        raise UsageError(f"--tta flip flips images; task '{task.name}' gives the model other input")
    flipped = model(x.flip(-1))
    return [logits, flipped.flip(-1) if task.targets == "segmentation" else flipped]


def mean_softmax(views: list[torch.Tensor]) -> torch.Tensor:
    """The log of the views' mean softmax: softmax of it gives back the mean
    probabilities, so metrics and ECE judge the averaged prediction."""
    log_probs = torch.stack([v.float().log_softmax(1) for v in views])
    # log-sum-exp: no log(0) where a probability underflows
    return torch.logsumexp(log_probs, dim=0) - math.log(len(views))
