"""A ``Session`` is one run of a plan: ``__init__`` sets everything up,
``run()`` is the loop.

Setup is linear: prepare (the same code path as ``ftkit plan``), load
weights, data and loss, make or reopen the run directory, the optimizer loop
and the loaders. The loop then enters each epoch's stage, trains, validates
and ends the epoch in a written order (``end_epoch``): the row in
metrics.jsonl, the stoppers' verdict, ``ftkit_epoch_end`` for plugins (the
console, TensorBoard, third-party ones), then ``best`` and ``last``.
Everything that changes from epoch to epoch lives in ``RunState`` and in
``last`` (``engine/train/state.py``), so a resumed run continues exactly
where its checkpoint was written.
"""

from __future__ import annotations

import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

import ftkit.checkpoint as ckpt
from ftkit.config import Config
from ftkit.engine.console import Console, Report
from ftkit.engine.rundir import layout as rundir
from ftkit.engine.rundir.checkpoints import Checkpoints
from ftkit.engine.rundir.layout import RunDir, Unsaved
from ftkit.engine.rundir.writer import background_writer
from ftkit.engine.stoppers import Stoppers
from ftkit.engine.summary import empty_classes, summarize
from ftkit.engine.train.criterion import make_loss
from ftkit.engine.train.distributed import World, epoch_seed
from ftkit.engine.train.drift import group_changes
from ftkit.engine.train.ema import Ema
from ftkit.engine.train.features import CachedFeatures, check_requested, why_not
from ftkit.engine.train.guards import GradNormAlert, NonFinite
from ftkit.engine.train.loaders import Batches, batch_mix, loaders
from ftkit.engine.train.loop import EpochProgress, Loop, NonFiniteStop, anchors
from ftkit.engine.train.staging import apply_stage, make_optimizer, set_train_mode
from ftkit.engine.train.state import RunState, checkpoint, restore, seed_everything, set_rng_state
from ftkit.errors import UsageError
from ftkit.loggers.tensorboard import TensorBoard
from ftkit.models.weights import read_state
from ftkit.plan.stages import Stage, steps_per_epoch
from ftkit.plugins.manager import Plugins
from ftkit.plugins.records import EpochRecord, Summary
from ftkit.plugins.run import Run
from ftkit.prepare import input_size_problem, model_data, prepare_run
from ftkit.resolve import model_family


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


class NoHooks:
    """Lifecycle hooks run on rank 0 only: every other rank calls this instead."""

    def __getattr__(self, name: str) -> Any:
        return lambda **kwargs: []


class Session:
    def __init__(
        self,
        config: Config,
        plugins: Plugins,
        world: World,
        device: torch.device,
        console: Console,
        saved: dict[str, Any] | None = None,  # last.pt of the run to resume
        run_dir: Path | None = None,
        unsaved: Unsaved | None = None,  # notes the run directory this run makes
    ) -> None:
        self.world, self.console, self.saved = world, console, saved
        self.unsaved = unsaved or Unsaved()
        self.summary: Summary | None = None  # how the run ended, once it has
        seed_everything(config.seed)
        # Every check of bad input, shared with plan; a resume loads its own weights.
        prepared = prepare_run(config, plugins, load_weights=not saved)
        self.config = config = prepared.config  # with what the weights decide (the input size)
        self.plan, self.model = prepared.plan, prepared.model
        self.task = plugins.tasks.get(config.task)
        self.num_classes = prepared.num_classes
        self.data = model_data(prepared)
        self.loss_fn, loss_note = make_loss(prepared, self.data, plugins)
        if loss_note:
            console.say(loss_note)
        family = model_family(config.model_spec, plugins)[0]
        self.split = family.split(self.model) if family.split else None
        if config.cache_features == "on":
            check_requested(
                self.split,
                self.model,
                self.plan.stages,
                self.data.train_is_deterministic,
                world.enabled,
            )
        if not saved:
            run_dir = self.create_run_dir(prepared)
        assert run_dir is not None
        self.out = RunDir(run_dir, main=world.main)
        # where the weights started, to measure how far each group moves (engine/train/drift.py)
        self.start_weights = self.starting_weights(saved)
        self.groups = {
            layer.name: prepared.anatomy.params_of([layer]) for layer in prepared.anatomy.layers
        }

        self.model.to(device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loop = Loop(
            self.model,
            make_optimizer(plugins.optimizers.get(config.optimizer), self.model),
            device,
            config.accumulate,
            config.amp,
            config.clip_grad_norm,
            GradNormAlert(config.grad_norm_alert, clip=config.clip_grad_norm),
            NonFinite(config.max_nonfinite_steps),
            world=world,
            channels_last=config.channels_last,
            compile=config.compile,
            window=config.slide_window,
            log_every=config.log_every,
        )
        self.loop.anchors = anchors(self.model, self.plan.anchored, self.start_weights, device)
        if config.ema is not None:
            self.loop.ema = Ema(self.model, config.ema)
        self.sampler, self.train_loader, self.val_loader = loaders(config, self.data, world, device)
        self.loop.mix = batch_mix(self.data)
        self.loader, self.loader_stage = self.train_loader, -1
        self.epoch_steps = steps_per_epoch(
            len(self.data.train),  # type: ignore[arg-type]
            config.batch_size,
            config.accumulate,
            world.size,
        )
        mean, std = prepared.preprocessing.mean, prepared.preprocessing.std
        self.info = Run(
            config, self.plan, self.model, run_dir, self.task, self.data.class_names, mean, std
        )
        self.state = RunState()
        if saved:
            self.state = restore(saved, self.model, self.loop, self.plan)
            self.info.start_epoch = self.state.epoch + 1
            self.out.keep_rows_up_to(self.state.epoch)
            batch = f", batch {self.loop.progress.batches}" if self.loop.progress else ""
            console.say(f"resuming {run_dir} after epoch {self.state.epoch}{batch}")

        monitor = config.monitor or self.task.monitor
        self.stoppers = Stoppers(config, monitor, self.state)
        self.checkpoints = Checkpoints(
            self.out,
            self.checkpoint,
            self.best_weights,
            self.plan.epochs,
            config.save_every,
            background=background_writer(config.checkpoint_writer, device),
        )
        # The run's own lifecycle plugins (lifecycle hooks run on rank 0 only):
        # they only read, so their order among plugins does not matter.
        self.own = [Report(console, monitor), TensorBoard()]
        self.plugins = plugins
        self.hooks = plugins.hook if world.main else NoHooks()

    def run(self) -> str:
        """Train the remaining epochs; how the run ended (its stop reason)."""
        for plugin in self.own if self.world.main else ():
            self.plugins.pm.register(plugin)
        self.hooks.ftkit_run_start(run=self.info)
        reason = "completed"  # from here on, ftkit_run_end hears how the run ended
        try:
            self.evaluate_baseline()
            with Interrupt() as interrupted:
                for epoch in range(self.state.epoch + 1, self.plan.epochs + 1):
                    stage = self.enter(epoch)
                    progress = self.train_epoch(epoch, stage, interrupted)
                    if progress is None:
                        reason = "non-finite"
                        break
                    if not progress.complete:
                        reason = self.pause(epoch, progress, interrupted.signal)
                        break
                    self.end_epoch(self.validate(epoch, stage, progress))
                    reason = self.world.from_main(self.info.stop_reason) or reason
                    if reason != "completed":
                        break
        except BaseException as exc:
            # Ctrl-C outside the steps (in the baseline evaluation) is an interrupt too
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            raise
        finally:
            self.end(reason)
        return reason

    def create_run_dir(self, prepared: Any) -> Path:
        # plan only warns: a model that takes one input size fails at its first step
        problem = input_size_problem(self.model, self.config)
        if problem:
            raise UsageError(problem)
        run_dir = None
        if self.world.main:
            run_dir = rundir.choose(self.config)
            RunDir(run_dir).create(
                self.config,
                {**self.plan.to_json(), **prepared.start_json()},
                prepared.split(),
                self.unsaved,
            )
            ckpt.save_weights(RunDir(run_dir).start, self.model.state_dict())
        if prepared.weights:
            self.console.say(prepared.weights.line())
        counts, names = self.data.label_counts(), self.data.class_names
        for warning in (*self.plan.warnings, *empty_classes(counts, names)):
            self.console.warn(warning)
        return Path(self.world.from_main(str(run_dir)))

    def starting_weights(self, saved: dict[str, Any] | None) -> dict[str, torch.Tensor]:
        """A copy of the weights the run started from (a resume reads its own)."""
        if not saved:
            return {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if not self.out.start.is_file():  # a run from before start.safetensors existed
            return {}
        return read_state(self.out.start)

    def evaluate_baseline(self) -> None:
        """Epoch 0 of a run from a checkpoint: what the run must not lose."""
        if not self.config.start_from or self.state.baseline is not None:
            return
        val, _ = self.loop.evaluate(self.val_loader, self.loss_fn, self.task, self.num_classes)
        self.state.baseline = val
        self.end_epoch(EpochRecord("baseline", 0, val))

    def end_epoch(self, record: EpochRecord) -> None:
        """An epoch's end, in this order (docs/architecture.md): its row in
        metrics.jsonl; the stoppers' verdict (a stop reason wins over any
        plugin's); ``ftkit_epoch_end`` for plugins; ``best`` when the verdict
        says it improved, and ``last``, which holds what every reader left."""
        if not self.world.main:  # rank 0 decides and writes; from_main tells the others
            return
        self.out.append(record.to_json())
        verdict = self.stoppers.check(record)
        if verdict.stop:
            self.info.request_stop(verdict.stop)
        self.hooks.ftkit_epoch_end(run=self.info, record=record)
        self.checkpoints.after_epoch(record, verdict.improved)

    def enter(self, epoch: int) -> Stage:
        """The epoch's stage: its groups in the optimizer, its loader, its BN mode."""
        index = self.plan.stage_at(epoch)
        stage = self.plan.stages[index]
        if index != self.state.stage_index:
            self.state.stage_index, self.state.stage_step = index, 0
            apply_stage(self.model, self.loop.optimizer, stage)
            self.loop.wrap()
            self.stoppers.start_stage()
            self.hooks.ftkit_stage_start(run=self.info, stage=stage, index=index)
        if index != self.loader_stage:  # a new stage, or the first after a resume
            self.loader, self.loader_stage = self.stage_loader(stage), index
        set_train_mode(self.model, stage)
        return stage

    def train_epoch(self, epoch: int, stage: Stage, interrupted: Interrupt) -> EpochProgress | None:
        """The epoch's steps (None when non-finite steps stopped it)."""
        progress = self.loop.progress  # set when resuming inside this epoch
        if progress is None:
            # An epoch's shuffle, augmentation and dropout are a function of
            # (seed, epoch), so replaying an epoch replays it exactly.
            torch.manual_seed(epoch_seed(self.config.seed, epoch))
        skip = progress.batches * self.config.batch_size if progress else 0
        self.sampler.set_epoch(epoch, skip=skip)
        if progress is not None:
            set_rng_state(self.saved["rng"])  # type: ignore[index]
        bar, on_batch = self.console.progress(epoch, self.plan.epochs, len(self.loader))
        try:
            args = (self.loss_fn, stage, self.state.stage_step, self.epoch_steps)
            progress = self.loop.train_epoch(self.loader, *args, on_batch, interrupted)
        except NonFiniteStop as exc:
            self.console.warn(f"{exc}; stopping with the last finite weights")
            return None
        finally:
            bar.close()
        if progress.complete:
            self.state.stage_step += progress.steps
            for note in progress.warnings:
                self.console.warn(note)
        return progress

    def validate(self, epoch: int, stage: Stage, progress: EpochProgress) -> EpochRecord:
        raw: dict[str, Any] = {}
        if self.loop.ema is not None:  # the average is what counts; the raw model's for comparison
            raw, _ = self.loop.evaluate(self.val_loader, self.loss_fn, self.task, self.num_classes)
        with self.loop.ema.applied(self.model) if self.loop.ema else nullcontext():
            val, self.info.samples = self.loop.evaluate(
                self.val_loader, self.loss_fn, self.task, self.num_classes
            )
        lrs: dict[str, float] = {}
        for group in self.loop.optimizer.param_groups:
            lrs.setdefault(group["name"], group["lr"])
        record = EpochRecord(
            stage.name,
            epoch,
            val,
            train_loss=self.loop.mean_loss(progress),
            lr=lrs,
            grad_norm={"mean": progress.grad_norm_mean, "max": progress.grad_norm_max},
            skipped_steps=progress.skipped,
            seconds=round(progress.seconds, 3),
            images_per_second=round(progress.images / max(progress.seconds, 1e-9), 1),
            weight_change=group_changes(self.start_weights, self.model.state_dict(), self.groups)
            if self.start_weights
            else {},
            raw=raw,
        )
        self.state.epoch, self.state.last = epoch, record.to_json()
        return record

    def pause(self, epoch: int, progress: EpochProgress, signum: int | None) -> str:
        """Stopped by a signal mid-epoch: save where it stands, say how to go on."""
        self.checkpoints.save()
        name = signal.Signals(signum or signal.SIGINT).name
        self.console.warn(
            f"{name}: stopped at batch {progress.batches} of epoch {epoch}; "
            f"resume with: ftkit run --resume {self.out.path}"
        )
        return "interrupted"

    def end(self, reason: str) -> None:
        summary = summarize(
            stop_reason=reason,
            monitor=self.stoppers.early.monitor,
            final=self.state.last,
            best=self.state.best,
            baseline=self.state.baseline,
            class_names=self.data.class_names,
            label_counts=self.data.label_counts(),
            per_class=self.task.per_class,
            guard=self.stoppers.guard,
            lr=self.config.lr,
        )
        self.summary = summary
        try:  # summary.json (when finished), plugins (the table, TensorBoard), `last`
            self.checkpoints.wait()  # the last epoch's files on disk before anyone hears
            if summary.finished and self.world.main:
                self.out.write_summary(summary.to_json())
            self.hooks.ftkit_run_end(run=self.info, summary=summary)
            if self.world.main:
                self.checkpoints.at_end(summary)
            self.checkpoints.finish()  # `last` on disk before the run says it ended
        finally:
            for plugin in self.own:
                if self.plugins.pm.is_registered(plugin):
                    self.plugins.pm.unregister(plugin)

    def best_weights(self) -> dict[str, torch.Tensor]:
        """What ``best`` holds: the average with --ema, else the model's weights."""
        return self.loop.ema.shadow if self.loop.ema else self.model.state_dict()

    def checkpoint(self) -> dict[str, Any]:
        """The content of ``last``."""
        self.stoppers.store()
        return checkpoint(self.state, self.model, self.loop, self.config)

    def stage_loader(self, stage: Stage) -> Batches:
        """The stage's batches: images, or the frozen trunk's cached outputs."""
        config, loop = self.config, self.loop
        split = self.split if config.cache_features != "off" else None
        deterministic = self.data.train_is_deterministic
        if split is None or why_not(split, loop.model, stage, deterministic, loop.world.enabled):
            return self.train_loader
        start = time.perf_counter()
        features = CachedFeatures(split, self.data.train, config.batch_size, loop.device)
        self.console.say(
            f"cached the frozen backbone's features of {len(features)} samples in "
            f"{time.perf_counter() - start:.1f}s; stage '{stage.name}' trains on them"
        )
        loop.net = split.head
        return DataLoader(
            features, batch_size=config.batch_size, sampler=self.sampler, drop_last=True
        )
