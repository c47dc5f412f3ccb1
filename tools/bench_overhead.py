"""Engine overhead: seconds per epoch of `ftkit run` against a plain PyTorch
loop doing the same work (model, data, batch size, AdamW, gradient clipping,
per-epoch validation with a confusion matrix), side by side in one process.

    python tools/bench_overhead.py [--epochs 4] [--image-size 64] [--json out.json]

ftkit's epoch time is measured through its own lifecycle hooks (from one
``ftkit_epoch_end`` to the next), so it includes everything ftkit does per
epoch: the progress bar, gradient-norm guards, metrics, TensorBoard and the
atomic ``last`` checkpoint. The first epoch of each is a warm-up and is not
counted; the runs alternate so that machine noise hits both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ftkit import hookimpl  # noqa: E402
from ftkit.config import Config  # noqa: E402
from ftkit.data import load_data  # noqa: E402
from ftkit.engine.run import EpochSampler, start  # noqa: E402
from ftkit.metrics import SegmentationMetrics  # noqa: E402
from ftkit.models import build_model  # noqa: E402
from ftkit.plugins.manager import Plugins  # noqa: E402


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


def plain_epochs(config: Config) -> list[float]:
    """The loop a practitioner would write by hand, doing the same work."""
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
    times = []
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        model.train()
        for x, y in train:
            loss = loss_fn(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        metrics = SegmentationMetrics(5)
        with torch.no_grad():
            for x, y in val:
                logits = model(x)
                loss_fn(logits, y)
                metrics.update(logits, y)
        metrics.compute()
        times.append(time.perf_counter() - t0)
    return times


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
    ours, plain = [], []
    for _ in range(args.rounds):
        plain += plain_epochs(config)[1:]
        ours += ftkit_epochs(config)[1:]
    result = {
        "model": config.model_spec,
        "image_size": args.image_size,
        "num_samples": args.num_samples,
        "batch_size": config.batch_size,
        "epochs_counted": len(ours),
        "threads": torch.get_num_threads(),
        "plain_s_per_epoch": statistics.median(plain),
        "ftkit_s_per_epoch": statistics.median(ours),
    }
    result["ratio"] = result["ftkit_s_per_epoch"] / result["plain_s_per_epoch"]
    print(json.dumps(result, indent=2))
    print(
        f"\n| loop | s/epoch (median of {len(ours)}) |\n|---|---|\n"
        f"| plain PyTorch | {result['plain_s_per_epoch']:.2f} |\n"
        f"| ftkit run | {result['ftkit_s_per_epoch']:.2f} |\n"
        f"| ratio | {result['ratio']:.3f} |"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
