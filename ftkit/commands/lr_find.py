"""``ftkit lr-find``: sweep the base LR through one stage of the plan and
suggest the one to train with.

Each group's LR is its plan LR times ``base / --lr``, so the ratios the plan
defines (discriminative multipliers, LLRD's decay, two-stage's divisors) hold
at every step; a finder that writes one LR into every group would sweep a
different plan from the one that runs. The sweep starts from the run's start
weights and takes one optimizer step per point of an exponential grid. The
loss is smoothed by an exponential moving average, debiased as Adam debiases
its moments, and the sweep stops once the smoothed loss passes ``diverge``
times its minimum or a loss turns non-finite. Afterwards the weights, the
optimizer, the ``requires_grad`` and train flags and every RNG are put back,
so nothing the sweep did reaches what runs next.

Three rules read the curve. Each ignores its first tenth (the average has
seen few losses there) and the point where it diverged:

- ``valley`` (the default): the longest run of points over which the
  smoothed loss keeps falling (a longest decreasing subsequence), and
  halfway into it; the most cautious rule, and the only one here that never
  suggested an LR at which a run broke;
- ``minimum``: a tenth of the LR at the smoothed loss's minimum, the classic
  rule (Smith 2017; fastai 1); where a loss keeps falling to the end of the
  range (a U-Net learning to predict its background) it suggests a
  destructive LR;
- ``steepest``: where the smoothed loss falls fastest per decade of LR, on
  its fall (before its minimum). On small, noisy batches this point jumps
  by a decade or more between two shuffles of the same data.

docs/recipes.md compares them on ImageNet MobileNetV2 and the elpv cells.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from ftkit.config import Config
from ftkit.engine.train.criterion import make_loss
from ftkit.engine.train.distributed import EpochSampler, World
from ftkit.engine.train.loaders import batch_mix, loaders
from ftkit.engine.train.loop import Loop, anchors
from ftkit.engine.train.staging import apply_stage, make_optimizer, set_train_mode
from ftkit.engine.train.state import rng_state, seed_everything, set_rng_state
from ftkit.engine.train.tally import EpochProgress, Tally
from ftkit.errors import UsageError
from ftkit.plan.units import fmt_lr
from ftkit.plugins.manager import Plugins
from ftkit.prepare import Prepared, model_data, prepare_run
from ftkit.resolve import pick_device

SKIP_START = 0.1  # the share of the curve the rules ignore at its start


@dataclass
class Sweep:
    """The curve: one point per optimizer step taken."""

    lrs: list[float] = field(default_factory=list)  # the base LR at each step
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    group_lrs: list[dict[str, float]] = field(default_factory=list)  # optimizer group -> LR
    stop: str = "the end of the range"
    diverged: bool = False


def grid(start: float, end: float, steps: int) -> list[float]:
    """``steps`` base LRs from ``start`` to ``end``, evenly spaced in log."""
    return [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]


@contextmanager
def restored(loop: Loop) -> Iterator[None]:
    """Put back everything a sweep changes: weights and buffers, gradients,
    ``requires_grad`` and train flags, the loop's optimizer, scaler and
    counters, and the RNGs."""
    model = loop.model
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = [
        (p, p.requires_grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()
    ]
    modes = [(m, m.training) for m in model.modules()]
    loop_state = copy.deepcopy(loop.state_dict())
    rng = rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        model.load_state_dict(weights)
        for p, requires_grad, grad in grads:
            p.requires_grad_(requires_grad)
            p.grad = grad
        for module, training in modes:
            module.training = training
        loop.load_state_dict(loop_state)
        set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def sweep(
    loop: Loop,
    batches: Iterator[Any],
    loss_fn: Callable[..., torch.Tensor],
    plan_lr: float,
    lrs: Sequence[float],
    *,
    smooth: float = 0.98,
    diverge: float = 4.0,
) -> Sweep:
    """One optimizer step per base LR in ``lrs`` on the groups already in
    ``loop.optimizer``, whose plan LRs are those of base LR ``plan_lr``."""
    result = Sweep()
    params = [p for g in loop.optimizer.param_groups for p in g["params"]]
    net = loop.net or loop.model
    average, lowest = 0.0, math.inf
    tally = Tally(loop.device, EpochProgress(), loop.alert, loop.nonfinite)
    with restored(loop):
        loop.optimizer.zero_grad(set_to_none=True)
        for i, lr in enumerate(lrs):
            loss = 0.0
            for _ in range(loop.accumulate):
                x, y = next(batches)
                with loop.autocast():
                    x, y = loop.batch(x, y)
                    batch_loss = loss_fn(net(x), y)
                tally.add_loss(batch_loss)
                loop.scaler.scale(batch_loss / loop.accumulate).backward()
                loss += float(batch_loss.detach()) / loop.accumulate  # the sweep reads each loss
            skipped = int(tally.skipped)
            loop.step(params, tally, lr / plan_lr)
            if int(tally.skipped) > skipped:
                result.stop, result.diverged = (
                    f"a non-finite loss or gradient at {fmt_lr(lr)}",
                    True,
                )
                break
            result.group_lrs.append({g["label"]: g["lr"] for g in loop.optimizer.param_groups})
            average = smooth * average + (1 - smooth) * loss
            smoothed = average / (1 - smooth ** (i + 1))
            result.lrs.append(lr)
            result.losses.append(loss)
            result.smoothed.append(smoothed)
            lowest = min(lowest, smoothed)
            if smoothed > diverge * lowest:
                result.stop = f"the smoothed loss passed {diverge:g}x its minimum at {fmt_lr(lr)}"
                result.diverged = True
                break
    return result


def _candidates(result: Sweep) -> range:
    end = len(result.lrs) - (1 if result.diverged else 0)
    return range(int(len(result.lrs) * SKIP_START), end)


def lowest(result: Sweep) -> int:
    """The index of the smoothed loss's minimum."""
    return min(_candidates(result), key=result.smoothed.__getitem__)


def _fall(result: Sweep) -> range:
    """The candidates up to the minimum: where the loss falls."""
    points = _candidates(result)
    return range(points.start, lowest(result) + 1)


def steepest(result: Sweep) -> int:
    """The index where the smoothed loss falls fastest per decade of LR, on its fall."""
    x = [math.log10(lr) for lr in result.lrs]
    s = result.smoothed
    n = len(s)

    def slope(i: int) -> float:  # central differences, one-sided at the ends
        lo, hi = max(i - 1, 0), min(i + 1, n - 1)
        return (s[hi] - s[lo]) / (x[hi] - x[lo])

    return min(_fall(result), key=slope)


def valley(result: Sweep) -> int:
    """Halfway into the longest run of points where the smoothed loss keeps falling."""
    points = list(_candidates(result))
    s = result.smoothed
    length = {i: 1 for i in points}  # the longest decreasing run ending at i
    start = {i: i for i in points}
    for k, i in enumerate(points):
        for j in points[:k]:
            if s[i] < s[j] and length[j] + 1 > length[i]:
                length[i], start[i] = length[j] + 1, start[j]
    end = max(points, key=lambda i: (length[i], -i))
    return start[end] + (end - start[end]) // 2


# rule -> the base LR it suggests
RULES: dict[str, Callable[[Sweep], float]] = {
    "valley": lambda result: result.lrs[valley(result)],
    "minimum": lambda result: result.lrs[lowest(result)] / 10,
    "steepest": lambda result: result.lrs[steepest(result)],
}


@dataclass
class Finding:
    """What ``ftkit lr-find`` reports."""

    prepared: Prepared
    stage: int  # 0-based index into the plan's stages
    sweep: Sweep
    rule: str
    suggestions: dict[str, float]  # rule -> base LR (rounded to two digits)

    @property
    def suggestion(self) -> float:
        return self.suggestions[self.rule]

    def lint(self) -> dict[str, list[str]]:
        """Each rule's LR lint: the warnings for the plan at its suggestion."""
        return {
            rule: list(self.prepared.plan_at(lr).warnings) for rule, lr in self.suggestions.items()
        }

    def to_json(self) -> dict[str, Any]:
        stage = self.prepared.plan.stages[self.stage]
        base = self.prepared.config.lr
        lint = self.lint()
        return {
            "strategy": self.prepared.plan.strategy,
            "stage": {"index": self.stage + 1, "name": stage.name},
            "groups": {g.label: g.lr / base for g in stage.groups},  # LR / base LR
            "rule": self.rule,
            "suggested_lr": self.suggestion,
            "suggestions": self.suggestions,
            "stop": self.sweep.stop,
            "lint": lint[self.rule],
            "lint_by_rule": lint,
            "lrs": self.sweep.lrs,
            "losses": self.sweep.losses,
            "smoothed": self.sweep.smoothed,
        }


def two_digits(lr: float) -> float:
    return float(f"{lr:.1e}")


def epochs(sampler: EpochSampler, loader: Iterable[Any]) -> Iterator[Any]:
    """The run's training batches, epoch after epoch: the sweep sees what the
    run's first epochs will (the same shuffles)."""
    for epoch in itertools.count(1):
        sampler.set_epoch(epoch)
        yield from loader


def find_lr(
    config: Config,
    plugins: Plugins,
    *,
    stage: int = 1,
    start: float = 1e-7,
    end: float = 1.0,
    steps: int = 100,
    rule: str = "valley",
    smooth: float = 0.98,
    diverge: float = 4.0,
) -> Finding:
    """Sweep the plan's ``stage`` (1-based) of ``config``'s run; nothing is written."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("lr-find runs in one process; run it without torchrun")
    if not start < end:
        raise UsageError(f"--start-lr {start:g} must be below --end-lr {end:g}")
    seed_everything(config.seed)
    prepared = prepare_run(config, plugins)
    stages = prepared.plan.stages
    if not 1 <= stage <= len(stages):
        raise UsageError(
            f"--stage {stage}: the plan of '{prepared.plan.strategy}' has {len(stages)} stage(s)"
        )
    config = prepared.config
    data = model_data(prepared)
    loss_fn, _ = make_loss(prepared, data, plugins)
    device = pick_device(config.device)
    model = prepared.model.to(device)
    optimizer = make_optimizer(plugins.optimizers.get(config.optimizer), model)
    loop = Loop(model, optimizer, device, config.accumulate, config.amp, config.clip_grad_norm)
    anchored = prepared.plan.anchored  # -o l2sp pulls these towards their start
    starts = {n: p.detach().clone() for n, p in model.named_parameters() if n in anchored}
    loop.anchors = anchors(model, anchored, starts, device)
    apply_stage(model, optimizer, stages[stage - 1])
    set_train_mode(model, stages[stage - 1])
    sampler, loader, _ = loaders(config, data, World(), device)
    loop.mix = batch_mix(data)
    result = sweep(
        loop,
        epochs(sampler, loader),
        loss_fn,
        config.lr,
        grid(start, end, steps),
        smooth=smooth,
        diverge=diverge,
    )
    if len(_candidates(result)) < 3:
        raise UsageError(
            f"the sweep stopped after {len(result.lrs)} step(s) ({result.stop}): "
            f"nothing to read; lower --start-lr or raise --steps"
        )
    suggestions = {name: two_digits(pick(result)) for name, pick in RULES.items()}
    return Finding(prepared, stage - 1, result, rule, suggestions)


def plot_sweep(finding: Finding, path: str) -> None:
    """Loss against base LR, raw and smoothed, with each rule's suggestion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = finding.sweep
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(result.lrs, result.losses, color="tab:blue", alpha=0.3, label="loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", label="smoothed")
    # Each rule its own colour and dash; the suggested one solid and wider.
    styles = iter([("tab:green", "--"), ("tab:purple", ":"), ("tab:orange", "-.")])
    for name, lr in finding.suggestions.items():
        chosen = name == finding.rule
        color, dash = ("tab:red", "-") if chosen else next(styles)
        ax.axvline(lr, color=color, linestyle=dash, lw=1.8 if chosen else 1.2,
                   label=f"{name}: {fmt_lr(lr)}" + (" (suggested)" if chosen else ""))  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("base LR (every group at its plan ratio)")
    ax.set_ylabel("training loss")
    # A loss is never below 0, nor below the sweep's lowest point; the divergence runs
    # off the top of the chart.
    finite = [v for v in (*result.losses, *result.smoothed) if math.isfinite(v)]
    low, top = min(finite), 1.5 * result.smoothed[0]
    ax.set_ylim(max(0.0, low - 0.05 * (top - low)), top)
    stage = finding.prepared.plan.stages[finding.stage].name
    ax.set_title(f"lr-find: {finding.prepared.plan.strategy}, stage '{stage}'")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
