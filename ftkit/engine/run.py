"""``ftkit run``: set up a run directory, execute the plan, write the summary.

The order is linear: prepare (the same code path as ``ftkit plan``), load
weights, data and loss; evaluate the baseline as epoch 0 when starting from a
checkpoint; then the epochs, each ending with validation, hooks, checkpoints
and the guards. Everything that changes from epoch to epoch lives in
``RunState`` and in ``checkpoints/last.pt``, so a resumed run continues
exactly where the checkpoint was written.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ftkit import __version__
from ftkit.config import Config
from ftkit.engine import checkpoint as ckpt
from ftkit.engine import distributed
from ftkit.engine.cache import CachedFeatures, check_requested, split_model, why_not
from ftkit.engine.distributed import EpochSampler, ShardSampler, World
from ftkit.engine.guards import BaselineGuard, EarlyStopping, GradNormAlert, NonFinite
from ftkit.engine.loop import EpochProgress, Loop, NonFiniteStop
from ftkit.engine.optim import apply_stage, make_optimizer, set_train_mode
from ftkit.engine.resume import open_resume
from ftkit.engine.summary import empty_classes, json_text, summarize, summary_table
from ftkit.errors import UsageError
from ftkit.plan import Plan
from ftkit.plugins.manager import Plugins
from ftkit.prepare import Prepared, input_size_problem, model_data, prepare_run
from ftkit.report import fmt_lr
from ftkit.tasks import TASKS, Task

EXIT_OK, EXIT_GUARD, EXIT_INTERRUPTED = 0, 3, 130
GUARD_STOPS = ("baseline-guard", "non-finite")


@dataclass
class Run:
    """What lifecycle hooks see of a run."""

    config: Config
    plan: Plan
    model: torch.nn.Module
    dir: Path
    task: Task
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    start_epoch: int = 1
    samples: list[Any] = field(default_factory=list)
    stop_reason: str | None = None

    def request_stop(self, reason: str) -> None:
        """Ask the engine to stop after the current epoch (for adaptive plugins)."""
        self.stop_reason = self.stop_reason or reason


@dataclass
class RunState:
    """Everything besides weights and optimizer that a resume needs."""

    epoch: int = 0  # last completed epoch
    stage_index: int = -1
    stage_step: int = 0  # optimizer steps into the current stage
    stopper: dict[str, Any] = field(default_factory=dict)
    guard: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    last: dict[str, Any] | None = None


class Interrupt:
    """SIGINT and SIGTERM stop training at the next step boundary."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __enter__(self) -> Interrupt:
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def __call__(self) -> bool:
        return self.signal is not None


QUIET = False  # set on every rank but 0: one process speaks for a distributed run


def say(message: str) -> None:
    if not QUIET:
        print(message, flush=True)


def warn(message: str) -> None:
    if not QUIET:
        print(f"ftkit: warning: {message}", file=sys.stderr, flush=True)


class NoHooks:
    """Lifecycle hooks run on rank 0 only."""

    def __getattr__(self, name: str) -> Any:
        return lambda **kwargs: []


def run_dir_for(config: Config) -> Path:
    if config.out:
        path = Path(config.out)
        if (path / "config.toml").is_file() and not (path / "checkpoints" / ckpt.LAST).exists():
            raise UsageError(
                f"--out '{path}' holds a run that stopped before its first checkpoint, "
                f"so there is nothing to resume; delete it or choose another --out"
            )
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UsageError(
                f"--out '{path}' already exists and is not empty; use --resume "
                f"{path} to continue it, or choose another --out"
            )
        return path
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{stamp}-{config.strategy}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path("runs") / f"{stamp}-{config.strategy}-{suffix}"
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def start(config: Config, plugins: Plugins, resume: str | None = None) -> int:
    saved: dict[str, Any] | None = None
    if resume:
        opened = open_resume(resume, config)
        if opened is None:
            return EXIT_OK
        run_dir, config, saved = opened
    world, device = distributed.setup(config.device)
    UNSAVED.clear()
    try:
        return train(config, plugins, world, device, saved, run_dir if saved else None)
    except BaseException:
        discard_unsaved_run()
        raise
    finally:
        distributed.shutdown(world)


# The run directory this process made, and whether it was there (empty) before:
# a run that fails before its first checkpoint has nothing to resume, so it must
# not leave a directory that blocks the same command until deleted by hand.
UNSAVED: list[tuple[Path, bool]] = []


def discard_unsaved_run() -> None:
    for run_dir, existed in UNSAVED:
        if (run_dir / "checkpoints" / ckpt.LAST).exists() or (run_dir / "summary.json").exists():
            continue
        # an --out directory the user made was empty: everything in it is this run's
        for path in run_dir.iterdir() if existed else [run_dir]:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        warn(f"removed {run_dir}: the run failed before its first checkpoint")
    UNSAVED.clear()


def train(
    config: Config,
    plugins: Plugins,
    world: World,
    device: torch.device,
    saved: dict[str, Any] | None,
    run_dir: Path | None,
) -> int:
    global QUIET
    QUIET = not world.main
    hooks = plugins.hook if world.main else NoHooks()
    seed_everything(config.seed)
    # Every check of bad input, shared with plan; a resume loads its own weights.
    prepared = prepare_run(config, plugins, load_weights=not saved)
    config = prepared.config  # with what the weights decide (the input size)
    task = TASKS[config.task]
    monitor = config.monitor or task.monitor
    model = prepared.model
    notes = [prepared.weights.line()] if prepared.weights else []
    data = model_data(prepared, plugins)
    mean, std = prepared.preprocessing.mean, prepared.preprocessing.std
    n_train, n_val = len(data.train), len(data.val)  # type: ignore[arg-type]
    loss_fn = make_loss(prepared, data, plugins)
    if config.cache_features == "on":
        check_requested(model, prepared.plan.stages, data.train_is_deterministic, world.enabled)

    if not saved:
        # plan only warns: a model that takes one input size fails at its first step
        problem = input_size_problem(prepared.model, prepared.config)
        if problem:
            raise UsageError(problem)
        if world.main:
            run_dir = run_dir_for(config)
            UNSAVED[:] = [(run_dir, run_dir.exists())]
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (run_dir / "config.toml").write_text(config.to_toml())
            plan_json = json.dumps({**prepared.plan.to_json(), **prepared.start_json()}, indent=2)
            (run_dir / "plan.json").write_text(plan_json + "\n")
        run_dir = Path(world.from_main(str(run_dir)))
        for note in notes:
            say(note)
        empty = empty_classes(data.label_counts(), data.class_names)
        for warning in (*prepared.plan.warnings, *empty):
            warn(warning)
    assert run_dir is not None

    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    loop = Loop(
        model,
        make_optimizer(config.optimizer, model),
        device,
        config.accumulate,
        config.amp,
        config.clip_grad_norm,
        GradNormAlert(config.grad_norm_alert, clip=config.clip_grad_norm),
        NonFinite(config.max_nonfinite_steps),
        world=world,
        channels_last=config.channels_last,
        compile=config.compile,
    )
    sampler = EpochSampler(n_train, config.seed, world)
    # The loader draws worker seeds from its own generator: an iterator made
    # mid-epoch on resume must not consume the global RNG that augmentation uses.
    train_loader = DataLoader(
        data.train,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.workers > 0,
        generator=torch.Generator().manual_seed(config.seed),
    )
    val_loader = DataLoader(
        data.val,
        batch_size=config.batch_size,
        sampler=ShardSampler(n_val, world),
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(sampler) // config.batch_size // config.accumulate
    plan = prepared.plan
    state = RunState(stopper=asdict(EarlyStopping(monitor, config.patience, config.min_delta)))
    run = Run(config, plan, model, run_dir, task, data.class_names, mean, std)
    metrics_path = run_dir / "metrics.jsonl"
    last_path = run_dir / "checkpoints" / ckpt.LAST

    if saved:
        state = restore(saved, model, loop, plan)
        run.start_epoch = state.epoch + 1
        if world.main:
            keep_rows_up_to(metrics_path, state.epoch)
        say(
            f"resuming {run_dir} after epoch {state.epoch}"
            + (f", batch {loop.progress.batches}" if loop.progress else "")
        )
    stopper = EarlyStopping(**state.stopper)
    hooks.ftkit_run_start(run=run)

    if config.start_from and state.baseline is None:
        state.baseline, _ = loop.evaluate(val_loader, loss_fn, task, prepared.num_classes)
        record = {"stage": "baseline", "epoch": 0, **state.baseline}
        if world.main:
            append_jsonl(metrics_path, record)
        say(epoch_line(record, monitor))
        hooks.ftkit_epoch_end(run=run, record=record)
        if config.guard:
            state.guard = asdict(
                BaselineGuard(
                    state.baseline[monitor],
                    state.baseline["val_loss"],
                    config.guard_epochs,
                    config.guard_tolerance,
                )
            )
    guard = BaselineGuard(**state.guard) if state.guard else None

    best_path = run_dir / "checkpoints" / ckpt.BEST

    def save_last(best: bool = False) -> None:
        """Write ``last`` (and ``best`` when the monitored metric improved)."""
        state.stopper = asdict(stopper)
        state.guard = asdict(guard) if guard else None
        if not world.main:
            return
        full = {
            "model": model.state_dict(),
            "loop": loop.state_dict(),
            "run": asdict(state),
            "rng": rng_state(),
            "config": config.to_toml(),
            "versions": {"ftkit": __version__, "torch": str(torch.__version__)},
            "threads": torch.get_num_threads(),
        }
        if best:
            ckpt.save_weights(best_path, model.state_dict())
        # Written in the training thread: on a 2-core CPU a background writer
        # competed with training and measured slower (docs/performance.md).
        ckpt.save_state(last_path, full)

    stop_reason = "completed"
    loader, loader_stage = train_loader, -1
    with Interrupt() as interrupted:
        for epoch in range(state.epoch + 1, plan.epochs + 1):
            index = plan.stage_at(epoch)
            stage = plan.stages[index]
            if index != state.stage_index:
                state.stage_index, state.stage_step = index, 0
                stopper.start_stage()  # patience counts within a stage (--patience)
                enter_stage(run, loop, index, hooks)
            if index != loader_stage:  # a new stage, or the first after a resume
                loader, loader_stage = (
                    stage_loader(config, stage, loop, data, train_loader, sampler),
                    index,
                )
            set_train_mode(model, stage)
            resumed = loop.progress is not None
            if not resumed:
                # An epoch's shuffle, augmentation and dropout are a function of
                # (seed, epoch), so replaying an epoch replays it exactly.
                torch.manual_seed(config.seed * 100_003 + epoch)
            sampler.set_epoch(
                epoch, skip=loop.progress.batches * config.batch_size if loop.progress else 0
            )
            if resumed:
                set_rng_state(saved["rng"])  # type: ignore[index]
            bar, on_batch = progress_bar(epoch, plan.epochs, len(loader))
            try:
                progress = loop.train_epoch(
                    loader,
                    loss_fn,
                    stage,
                    state.stage_step,
                    steps_per_epoch,
                    on_batch,
                    interrupted,
                )
            except NonFiniteStop as exc:
                warn(f"{exc}; stopping with the last finite weights")
                stop_reason = "non-finite"
                break
            finally:
                bar.close()
            if not progress.complete:
                save_last()
                name = signal.Signals(interrupted.signal or signal.SIGINT).name
                warn(
                    f"{name}: stopped at batch {progress.batches} of epoch {epoch}; "
                    f"resume with: ftkit run --resume {run_dir}"
                )
                return EXIT_INTERRUPTED
            state.stage_step += progress.steps
            for note in progress.warnings:
                warn(note)
            val, run.samples = loop.evaluate(val_loader, loss_fn, task, prepared.num_classes)
            record = epoch_record(epoch, stage.name, progress, val, loop)
            state.epoch, state.last = epoch, record
            if world.main:
                append_jsonl(metrics_path, record)
            say(epoch_line(record, monitor))
            hooks.ftkit_epoch_end(run=run, record=record)
            improved = stopper.update(epoch, record)
            if improved:
                state.best = record
            if guard is not None and guard.update(record[monitor], record["val_loss"]):
                stop_reason = "baseline-guard"
            elif stopper.should_stop:
                stop_reason = "early-stopping"
            elif world.from_main(run.stop_reason):  # plugins run on rank 0 only
                stop_reason = world.from_main(run.stop_reason)
            save_last(best=improved)
            if stop_reason != "completed":
                break

    summary = summarize(
        stop_reason=stop_reason,
        monitor=monitor,
        final=state.last,
        best=state.best,
        baseline=state.baseline,
        class_names=data.class_names,
        label_counts=data.label_counts(),
        per_class=task.per_class,
        guard=guard,
        lr=config.lr,
    )
    if world.main:
        (run_dir / "summary.json").write_text(json_text(summary, indent=2) + "\n")
    hooks.ftkit_run_end(run=run, summary=summary)
    say(summary_table(summary, task.per_class))
    if "diagnosis_message" in summary:
        (warn if summary["diagnosis"] != "healthy" else say)(
            f"diagnosis {summary['diagnosis']}: {summary['diagnosis_message']}"
        )
    best = f"{stopper.best:.4f} at epoch {stopper.best_epoch}" if stopper.best is not None else "-"
    say(f"{stop_reason} after {summary['epochs_run']} epoch(s); best {monitor} {best}")
    say(f"run directory: {run_dir}\nview it with: tensorboard --logdir {run_dir / 'tb'}")
    return EXIT_GUARD if stop_reason in GUARD_STOPS else EXIT_OK


def enter_stage(run: Run, loop: Loop, index: int, hooks: Any) -> None:
    stage = run.plan.stages[index]
    apply_stage(run.model, loop.optimizer, stage)
    loop.wrap()
    trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    lrs = ", ".join(
        f"{g.name} {fmt_lr(g.lr)}" for g in stage.groups if not g.name.endswith("/no_decay")
    )
    say(
        f"stage {index + 1}/{len(run.plan.stages)} '{stage.name}': {lrs}; "
        f"{trainable:,} trainable parameters"
    )
    hooks.ftkit_stage_start(run=run, stage=stage, index=index)


def stage_loader(
    config: Config,
    stage: Any,
    loop: Loop,
    data: Any,
    train_loader: DataLoader,
    sampler: EpochSampler,
) -> DataLoader:
    """The stage's batches: images, or the frozen trunk's cached outputs."""
    split = split_model(loop.model) if config.cache_features != "off" else None
    if split is None or why_not(
        split, loop.model, stage, data.train_is_deterministic, loop.world.enabled
    ):
        return train_loader
    start = time.perf_counter()
    features = CachedFeatures(split, data.train, config.batch_size, loop.device)
    say(
        f"cached the frozen backbone's features of {len(features)} samples in "
        f"{time.perf_counter() - start:.1f}s; stage '{stage.name}' trains on them"
    )
    loop.net = split.head
    return DataLoader(features, batch_size=config.batch_size, sampler=sampler, drop_last=True)


def restore(saved: dict[str, Any], model: torch.nn.Module, loop: Loop, plan: Plan) -> RunState:
    state = RunState(**saved["run"])
    model.load_state_dict(saved["model"])
    if state.stage_index >= 0:
        # The optimizer's groups must be those of the stage before its state loads.
        apply_stage(model, loop.optimizer, plan.stages[state.stage_index])
        loop.wrap()
    loop.load_state_dict(saved["loop"])
    return state


def rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": pos,
        "numpy_gauss": [has_gauss, gauss],
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate((3, tuple(rng["python"]), None))
    np.random.set_state(
        ("MT19937", rng["numpy"].numpy().astype(np.uint32), rng["numpy_pos"], *rng["numpy_gauss"])
    )


def keep_rows_up_to(path: Path, epoch: int) -> None:
    """Drop the metrics rows an interrupted run wrote after its checkpoint."""
    if not path.exists():
        return
    rows = [
        line
        for line in path.read_text().splitlines()
        if line and json.loads(line)["epoch"] <= epoch
    ]
    path.write_text("".join(row + "\n" for row in rows))


def make_loss(prepared: Prepared, data: Any, plugins: Plugins) -> Any:
    from ftkit.losses import build_loss, class_weights, parse_class_weights

    weights = None
    if prepared.class_weights:
        parsed = parse_class_weights(prepared.class_weights, prepared.num_classes)
        weights = class_weights(parsed, data.label_counts()) if isinstance(parsed, str) else parsed
        say(
            "class weights ("
            + (parsed if isinstance(parsed, str) else "given")
            + "): "
            + ", ".join(f"{n} {w:.3g}" for n, w in zip(data.class_names, weights, strict=False))
        )
    task = TASKS[prepared.config.task]
    return build_loss(
        prepared.loss,
        plugins.losses,
        task=task.name,
        num_classes=prepared.num_classes,
        class_weights=weights,
        ignore_index=task.ignore_index,
        label_smoothing=prepared.config.label_smoothing,
    )


def epoch_record(
    epoch: int, stage: str, stats: EpochProgress, val: dict[str, Any], loop: Loop
) -> dict[str, Any]:
    lrs: dict[str, float] = {}
    for group in loop.optimizer.param_groups:
        lrs.setdefault(group["name"].split("/")[0], group["lr"])
    return {
        "stage": stage,
        "epoch": epoch,
        "train_loss": loop.mean_loss(stats),
        **val,
        "lr": lrs,
        "grad_norm": {"mean": stats.grad_norm_mean, "max": stats.grad_norm_max},
        "skipped_steps": stats.skipped,
        "seconds": round(stats.seconds, 3),
        "images_per_second": round(stats.images / max(stats.seconds, 1e-9), 1),
    }


def epoch_line(record: dict[str, Any], monitor: str) -> str:
    parts = [f"epoch {record['epoch']:>3} [{record['stage']}]"]
    if "train_loss" in record:
        parts.append(f"train_loss {record['train_loss']:.4f}")
    parts.append(f"val_loss {record['val_loss']:.4f}")
    if monitor != "val_loss":
        parts.append(f"{monitor} {record.get(monitor, float('nan')):.4f}")
    if "seconds" in record:
        parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json_text(record) + "\n")


def progress_bar(epoch: int, total: int, batches: int) -> tuple[Any, Any]:
    """A tqdm bar (only on a terminal) and the callback that advances it."""
    from tqdm import tqdm

    bar = tqdm(
        total=batches, desc=f"epoch {epoch}/{total}", leave=False, disable=None, unit="batch"
    )
    start, images = time.perf_counter(), 0

    def advance(loss: float, n: int) -> None:
        nonlocal images
        images += n
        rate = images / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}")
        bar.update(1)

    return bar, advance
