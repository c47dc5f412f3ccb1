"""``ftkit run``: set up a run directory, execute the plan, write the summary.

The order is linear: prepare (the same code path as ``ftkit plan``), load
weights, data and loss; evaluate the baseline as epoch 0 when starting from a
checkpoint; then the epochs, each ending with validation, hooks, checkpoints
and the guards; then ``ftkit_run_end``, however the run ended. Everything that
changes from epoch to epoch lives in ``RunState`` and in
``checkpoints/last.pt`` (``engine/state.py``), so a resumed run continues
exactly where the checkpoint was written.
"""

from __future__ import annotations

import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ftkit.config import Config
from ftkit.engine import distributed, rundir
from ftkit.engine.cache import CachedFeatures, check_requested, split_model, why_not
from ftkit.engine.console import Console
from ftkit.engine.distributed import EpochSampler, ShardSampler, World
from ftkit.engine.guards import BaselineGuard, EarlyStopping, GradNormAlert, NonFinite
from ftkit.engine.lifecycle import NoHooks, Run
from ftkit.engine.loop import EpochProgress, Loop, NonFiniteStop
from ftkit.engine.loss import make_loss
from ftkit.engine.optim import apply_stage, make_optimizer, set_train_mode
from ftkit.engine.resume import open_resume
from ftkit.engine.rundir import RunDir, append_jsonl
from ftkit.engine.state import RunState, checkpoint, restore, seed_everything, set_rng_state
from ftkit.engine.summary import empty_classes, summarize, summary_table
from ftkit.errors import UsageError
from ftkit.plan import steps_per_epoch
from ftkit.plugins.manager import Plugins
from ftkit.prepare import input_size_problem, model_data, prepare_run
from ftkit.report import fmt_lr

# Run is the hook contract's type; append_jsonl is the metrics file's writer
__all__ = ["Run", "append_jsonl", "start", "train"]

EXIT_OK, EXIT_GUARD, EXIT_INTERRUPTED = 0, 3, 130
GUARD_STOPS = ("baseline-guard", "non-finite")
UNFINISHED = ("interrupted", "error")  # stop reasons that leave the run resumable


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


def start(config: Config, plugins: Plugins, resume: str | None = None) -> int:
    world, device = distributed.setup(config.device)
    console = Console(main=world.main)  # known before --resume speaks: rank 0 only
    try:
        run_dir, saved = None, None
        if resume:
            opened = open_resume(resume, config, console)
            if opened is None:
                return EXIT_OK
            run_dir, saved = opened
        rundir.UNSAVED.clear()
        try:
            return train(config, plugins, world, device, saved, run_dir, console)
        except BaseException:
            rundir.discard_unsaved_run(console)
            raise
    finally:
        distributed.shutdown(world)


def train(
    config: Config,
    plugins: Plugins,
    world: World,
    device: torch.device,
    saved: dict[str, Any] | None,
    run_dir: Path | None,
    console: Console,
) -> int:
    say, warn = console.say, console.warn
    hooks = plugins.hook if world.main else NoHooks()
    seed_everything(config.seed)
    # Every check of bad input, shared with plan; a resume loads its own weights.
    prepared = prepare_run(config, plugins, load_weights=not saved)
    config = prepared.config  # with what the weights decide (the input size)
    plan, model = prepared.plan, prepared.model
    task = plugins.tasks.get(config.task)
    monitor = config.monitor or task.monitor
    data = model_data(prepared)
    loss_fn, loss_note = make_loss(prepared, data, plugins)
    if loss_note:
        say(loss_note)
    if config.cache_features == "on":
        check_requested(model, plan.stages, data.train_is_deterministic, world.enabled)

    if not saved:
        # plan only warns: a model that takes one input size fails at its first step
        problem = input_size_problem(model, config)
        if problem:
            raise UsageError(problem)
        if world.main:
            run_dir = rundir.choose(config)
            RunDir(run_dir).create(config, {**plan.to_json(), **prepared.start_json()})
        run_dir = Path(world.from_main(str(run_dir)))
        if prepared.weights:
            say(prepared.weights.line())
        for warning in (*plan.warnings, *empty_classes(data.label_counts(), data.class_names)):
            warn(warning)
    assert run_dir is not None
    out = RunDir(run_dir, main=world.main)

    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    loop = Loop(
        model,
        make_optimizer(plugins.optimizers.get(config.optimizer), model),
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
    sampler, train_loader, val_loader = loaders(config, data, world, device)
    n_train = len(data.train)  # type: ignore[arg-type]
    epoch_steps = steps_per_epoch(n_train, config.batch_size, config.accumulate, world.size)
    mean, std = prepared.preprocessing.mean, prepared.preprocessing.std
    run = Run(config, plan, model, run_dir, task, data.class_names, mean, std)
    state = RunState(stopper=asdict(EarlyStopping(monitor, config.patience, config.min_delta)))
    if saved:
        state = restore(saved, model, loop, plan)
        run.start_epoch = state.epoch + 1
        out.keep_rows_up_to(state.epoch)
        say(
            f"resuming {run_dir} after epoch {state.epoch}"
            + (f", batch {loop.progress.batches}" if loop.progress else "")
        )
    stopper = EarlyStopping(**state.stopper)
    guard = BaselineGuard(**state.guard) if state.guard else None

    def save_last(best: bool = False) -> None:
        """Write ``last`` (and ``best`` when the monitored metric improved)."""
        state.stopper = asdict(stopper)
        state.guard = asdict(guard) if guard else None
        if out.main:  # other ranks hold the same weights: only rank 0 builds and writes them
            out.save(checkpoint(state, model, loop, config), model.state_dict() if best else None)

    hooks.ftkit_run_start(run=run)
    stop_reason = "completed"  # from here on, ftkit_run_end hears how the run ended
    try:
        if config.start_from and state.baseline is None:
            state.baseline, _ = loop.evaluate(val_loader, loss_fn, task, prepared.num_classes)
            record = {"stage": "baseline", "epoch": 0, **state.baseline}
            out.append(record)
            say(epoch_line(record, monitor))
            hooks.ftkit_epoch_end(run=run, record=record)
            if config.guard:
                guard = BaselineGuard(
                    state.baseline[monitor],
                    state.baseline["val_loss"],
                    config.guard_epochs,
                    config.guard_tolerance,
                )

        loader, loader_stage = train_loader, -1
        with Interrupt() as interrupted:
            for epoch in range(state.epoch + 1, plan.epochs + 1):
                index = plan.stage_at(epoch)
                stage = plan.stages[index]
                if index != state.stage_index:
                    state.stage_index, state.stage_step = index, 0
                    stopper.start_stage()  # patience counts within a stage (--patience)
                    enter_stage(run, loop, index, hooks, console)
                if index != loader_stage:  # a new stage, or the first after a resume
                    loader, loader_stage = (
                        stage_loader(config, stage, loop, data, train_loader, sampler, console),
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
                        epoch_steps,
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
                    stop_reason = "interrupted"
                    break
                state.stage_step += progress.steps
                for note in progress.warnings:
                    warn(note)
                val, run.samples = loop.evaluate(val_loader, loss_fn, task, prepared.num_classes)
                record = epoch_record(epoch, stage.name, progress, val, loop)
                state.epoch, state.last = epoch, record
                out.append(record)
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
    except BaseException as exc:
        # Ctrl-C outside the steps (in the baseline evaluation) is an interrupt too
        stop_reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        raise
    finally:
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
        # summary.json marks a finished run: an interrupted one must stay resumable
        if stop_reason not in UNFINISHED:
            out.write_summary(summary)
        hooks.ftkit_run_end(run=run, summary=summary)

    if stop_reason == "interrupted":
        return EXIT_INTERRUPTED
    say(summary_table(summary, task.per_class))
    if "diagnosis_message" in summary:
        (warn if summary["diagnosis"] != "healthy" else say)(
            f"diagnosis {summary['diagnosis']}: {summary['diagnosis_message']}"
        )
    best = f"{stopper.best:.4f} at epoch {stopper.best_epoch}" if stopper.best is not None else "-"
    say(f"{stop_reason} after {summary['epochs_run']} epoch(s); best {monitor} {best}")
    say(f"run directory: {run_dir}\nview it with: tensorboard --logdir {run_dir / 'tb'}")
    return EXIT_GUARD if stop_reason in GUARD_STOPS else EXIT_OK


def loaders(
    config: Config, data: Any, world: World, device: torch.device
) -> tuple[EpochSampler, DataLoader, DataLoader]:
    """The training sampler and loader (this rank's share of a (seed, epoch)
    shuffle), and the validation loader (this rank's share, in order)."""
    sampler = EpochSampler(len(data.train), config.seed, world)
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
        collate_fn=data.collate,  # MixUp/CutMix, when asked for
    )
    val_loader = DataLoader(
        data.val,
        batch_size=config.batch_size,
        sampler=ShardSampler(len(data.val), world),
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
    )
    return sampler, train_loader, val_loader


def enter_stage(run: Run, loop: Loop, index: int, hooks: Any, console: Console) -> None:
    stage = run.plan.stages[index]
    apply_stage(run.model, loop.optimizer, stage)
    loop.wrap()
    trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    lrs = ", ".join(
        f"{g.name} {fmt_lr(g.lr)}" for g in stage.groups if not g.name.endswith("/no_decay")
    )
    console.say(
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
    console: Console,
) -> DataLoader:
    """The stage's batches: images, or the frozen trunk's cached outputs."""
    split = split_model(loop.model) if config.cache_features != "off" else None
    if split is None or why_not(
        split, loop.model, stage, data.train_is_deterministic, loop.world.enabled
    ):
        return train_loader
    start = time.perf_counter()
    features = CachedFeatures(split, data.train, config.batch_size, loop.device)
    console.say(
        f"cached the frozen backbone's features of {len(features)} samples in "
        f"{time.perf_counter() - start:.1f}s; stage '{stage.name}' trains on them"
    )
    loop.net = split.head
    return DataLoader(features, batch_size=config.batch_size, sampler=sampler, drop_last=True)


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
