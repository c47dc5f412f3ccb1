"""Engine overhead: seconds per epoch of `ftkit run` against a plain PyTorch
loop doing the same work (model, data, batch size, AdamW, gradient clipping,
per-epoch validation with a confusion matrix), side by side in one process;
and, when `lightning` is installed (``pip install -e '.[bench]'``), against a
Lightning ``Trainer`` doing that same work, with its default per-epoch
checkpoint and without one.

    python tools/bench_overhead.py [--epochs 4] [--image-size 64] [--json out.json]

ftkit's epoch time is measured through its own lifecycle hooks (from one
``ftkit_epoch_end`` to the next), so it includes everything ftkit does per
epoch: the progress bar, gradient-norm guards, metrics, TensorBoard and the
atomic ``last`` checkpoint. Lightning's is measured from one
``on_train_epoch_start`` to the next (the last epoch's, to ``on_train_end``),
so it includes its validation loop and its checkpoint. The first epoch of
each is a warm-up and is not counted; the runs alternate so that machine
noise hits all of them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ftkit import hookimpl  # noqa: E402
from ftkit.config import Config  # noqa: E402
from ftkit.data import load_data  # noqa: E402
from ftkit.engine.run import start  # noqa: E402
from ftkit.engine.train.distributed import EpochSampler  # noqa: E402
from ftkit.metrics import SegmentationMetrics  # noqa: E402
from ftkit.plugins.manager import Plugins  # noqa: E402
from ftkit.resolve import build_model  # noqa: E402

# An optional extra (`bench`): without it the Lightning reference is skipped.
HAVE_LIGHTNING = importlib.util.find_spec("lightning") is not None
SKIPPED = "Lightning reference skipped: lightning is not installed (pip install -e '.[bench]')"


class EpochClock:
    """A plugin: the wall time between successive epoch ends."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    @hookimpl
    def ftkit_run_start(self, run):
        self.marks = [time.perf_counter()]

    @hookimpl
    def ftkit_epoch_end(self, run, record):
        self.marks.append(time.perf_counter())


def ftkit_epochs(config: Config) -> list[float]:
    plugins = Plugins()
    clock = EpochClock()
    plugins.pm.register(clock, name="bench-clock")
    with tempfile.TemporaryDirectory() as out:
        code = start(Config(**{**config.__dict__, "out": f"{out}/run"}), plugins)
    assert code == 0
    return [b - a for a, b in zip(clock.marks, clock.marks[1:], strict=False)]


@dataclass
class Work:
    """What the hand-written loop and Lightning both train: one construction,
    so that they get the same model, batches, optimizer and loss."""

    model: torch.nn.Module
    sampler: EpochSampler
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    optimizer: torch.optim.Optimizer
    loss_fn: torch.nn.Module


def build_work(config: Config) -> Work:
    torch.manual_seed(config.seed)
    plugins = Plugins()
    model = build_model(config.model_spec, num_classes=5, task="segmentation", plugins=plugins)
    data = load_data(
        config.data,
        "segmentation",
        plugins.datasets,
        image_size=config.image_size,
        num_samples=config.num_samples,
        seed=config.seed,
        augment=config.augment,
    )
    sampler = EpochSampler(len(data.train), config.seed)
    train = torch.utils.data.DataLoader(
        data.train, batch_size=config.batch_size, sampler=sampler, drop_last=True
    )
    val = torch.utils.data.DataLoader(data.val, batch_size=config.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    return Work(model, sampler, train, val, optimizer, loss_fn)


def plain_epochs(config: Config) -> list[float]:
    """The loop a practitioner would write by hand, doing the same work."""
    work = build_work(config)
    model, loss_fn, optimizer = work.model, work.loss_fn, work.optimizer
    times = []
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        work.sampler.set_epoch(epoch)
        model.train()
        for x, y in work.train:
            loss = loss_fn(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        metrics = SegmentationMetrics(5)
        with torch.no_grad():
            for x, y in work.val:
                logits = model(x)
                loss_fn(logits, y)
                metrics.update(logits, y)
        metrics.compute()
        times.append(time.perf_counter() - t0)
    return times


def lightning_epochs(config: Config, checkpoint: bool) -> list[float]:
    """A Lightning ``Trainer`` doing the plain loop's work, as a practitioner
    would use it: ``checkpoint`` keeps its default ``ModelCheckpoint`` (a
    checkpoint after every epoch's validation). Timed from one
    ``on_train_epoch_start`` to the next, the last to ``on_train_end``: an
    epoch's ``on_train_epoch_end`` would be too early, as ``ModelCheckpoint``
    writes after the other callbacks' ``on_train_epoch_end``.
    Its progress bar, logger and model summary are off, so as not to time
    them; validation runs under ``no_grad`` like the plain loop's, and the
    sanity-check validation the plain loop has no counterpart to is off."""
    import lightning as L  # the optional extra `bench`: only this reference needs it

    work = build_work(config)

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = work.model

        def on_train_epoch_start(self) -> None:
            work.sampler.set_epoch(self.current_epoch + 1)  # the plain loop's shuffles

        def training_step(self, batch, batch_idx):
            x, y = batch
            return work.loss_fn(self.model(x), y)

        def on_validation_epoch_start(self) -> None:
            self.metrics = SegmentationMetrics(5)

        def validation_step(self, batch, batch_idx) -> None:
            x, y = batch
            logits = self.model(x)
            work.loss_fn(logits, y)
            self.metrics.update(logits, y)

        def on_validation_epoch_end(self) -> None:
            self.metrics.compute()

        def configure_optimizers(self):
            return work.optimizer

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_epoch_start(self, trainer, module) -> None:
            self.marks.append(time.perf_counter())

        def on_train_end(self, trainer, module) -> None:
            self.marks.append(time.perf_counter())

    clock = Clock()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # "GPU available: ..."
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer = L.Trainer(
            accelerator="cpu",  # the plain loop and the benchmarks' config are on the CPU
            devices=1,
            max_epochs=config.epochs,
            gradient_clip_val=config.clip_grad_norm,
            enable_checkpointing=checkpoint,
            enable_progress_bar=False,
            logger=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            inference_mode=False,
            callbacks=[clock],
            default_root_dir=out,
        )
        trainer.fit(Module(), train_dataloaders=work.train, val_dataloaders=work.val)
    return [b - a for a, b in zip(clock.marks, clock.marks[1:], strict=False)]


def overhead(config: Config, rounds: int = 2) -> dict:
    """Median s/epoch of each loop, the first epoch of each run left out, and
    the ratios; the runs alternate, so that noise hits all of them."""
    loops = {
        "plain": plain_epochs,
        "ftkit": ftkit_epochs,
        # --save-every: `last` only when the run ends, so no epoch counted writes it
        "ftkit_save_at_end": lambda c: ftkit_epochs(replace(c, save_every=c.epochs)),
        # the background writer (the default on CUDA; on a CPU it shares the cores)
        "ftkit_async_writer": lambda c: ftkit_epochs(replace(c, checkpoint_writer="async")),
    }
    if HAVE_LIGHTNING:
        loops["lightning"] = lambda c: lightning_epochs(c, checkpoint=True)
        loops["lightning_no_checkpoint"] = lambda c: lightning_epochs(c, checkpoint=False)
    else:
        print(SKIPPED)
    epochs: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        for name, loop in loops.items():
            epochs[name] += loop(config)[1:]
    result: dict = {"epochs_counted": len(epochs["ftkit"])}
    result |= {f"{name}_s_per_epoch": statistics.median(t) for name, t in epochs.items()}
    result["ratio"] = result["ftkit_s_per_epoch"] / result["plain_s_per_epoch"]
    result["save_at_end_ratio"] = (
        result["ftkit_save_at_end_s_per_epoch"] / result["plain_s_per_epoch"]
    )
    result["async_writer_ratio"] = (
        result["ftkit_async_writer_s_per_epoch"] / result["plain_s_per_epoch"]
    )
    if HAVE_LIGHTNING:
        result["ftkit_over_lightning"] = (
            result["ftkit_s_per_epoch"] / result["lightning_s_per_epoch"]
        )
        result["lightning_over_no_checkpoint"] = (
            result["lightning_s_per_epoch"] / result["lightning_no_checkpoint_s_per_epoch"]
        )
    else:
        result["lightning"] = SKIPPED
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = Config(
        strategy="full",
        lr=1e-4,
        epochs=args.epochs,
        image_size=args.image_size,
        num_samples=args.num_samples,
        clip_grad_norm=1.0,
        device="cpu",
        strategy_options={"schedule": "constant"},
    )
    result = {
        "model": config.model_spec,
        "image_size": args.image_size,
        "num_samples": args.num_samples,
        "batch_size": config.batch_size,
        "threads": torch.get_num_threads(),
        **overhead(config, args.rounds),
    }
    print(json.dumps(result, indent=2))
    rows = [("plain PyTorch", "plain"), ("ftkit run", "ftkit")]
    rows += [("ftkit run --save-every EPOCHS", "ftkit_save_at_end")]
    rows += [("Lightning", "lightning"), ("Lightning, no checkpoint", "lightning_no_checkpoint")]
    table = "".join(
        f"| {label} | {result[f'{key}_s_per_epoch']:.2f} |\n"
        for label, key in rows
        if f"{key}_s_per_epoch" in result
    )
    print(
        f"\n| loop | s/epoch (median of {result['epochs_counted']}) |\n|---|---|\n{table}"
        f"| ftkit / plain | {result['ratio']:.3f} |"
    )
    if HAVE_LIGHTNING:
        print(
            f"| ftkit / Lightning | {result['ftkit_over_lightning']:.3f} |\n"
            f"| Lightning / Lightning without checkpoint | "
            f"{result['lightning_over_no_checkpoint']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
