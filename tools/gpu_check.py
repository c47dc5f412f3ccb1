"""What a GPU makes of ftkit's training step, in one JSON object (under 5 minutes
on one CUDA GPU):

- images/s of `ftkit run` (epoch 2, data from memory), of a plain PyTorch loop
  on the same model (random batches already on the device: the upper bound) and,
  with the `bench` extra, of Lightning doing the plain loop's work; for an smp
  U-Net ResNet-34 at 512 px and `timm:vit_small_patch16_224` at 224 px (random
  weights), each with `--amp bf16 --channels-last` and without;
- host syncs per training step: on CUDA the warnings of
  `torch.cuda.set_sync_debug_mode("warn")` inside `Loop.train_epoch`, on the CPU
  the host reads that `tests/test_sync_free.py` counts;
- the time the training thread spends per epoch on checkpoints (with the
  default writer, async on CUDA);
- `--compile` on and off for the first model.

    python tools/gpu_check.py                       # on a CUDA machine
    python tools/gpu_check.py --device cpu --quick  # the same code, tiny (tested in CI)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ftkit  # noqa: E402
from ftkit.engine.rundir.checkpoints import Checkpoints  # noqa: E402
from ftkit.engine.train.loop import Loop  # noqa: E402
from ftkit.plugins.manager import Plugins  # noqa: E402
from ftkit.resolve import build_model  # noqa: E402

FULL = [
    {"model": "smp:unet:resnet34", "task": "segmentation", "image_size": 512, "batch_size": 8},
    {"model": "timm:vit_small_patch16_224", "task": "classification", "image_size": 224,
     "batch_size": 64},
]  # fmt: skip
QUICK = [
    {"model": "smp:unet:resnet18", "task": "segmentation", "image_size": 32, "batch_size": 4},
    {"model": "tv:resnet18", "task": "classification", "image_size": 32, "batch_size": 4},
]
READS = {"item", "__float__", "__bool__", "__int__", "__index__", "tolist", "cpu", "numpy"}


class HostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in READS
        return func(*args, **(kwargs or {}))


@contextmanager
def watched(device: str, found: dict[str, float]):
    """Count host syncs inside ``Loop.train_epoch`` and time the training
    thread's checkpoint work (``Checkpoints.after_epoch``)."""
    train_epoch, after_epoch = Loop.train_epoch, Checkpoints.after_epoch
    found.update(syncs=0, steps=0, checkpoint_s=0.0, epochs=0)

    def counted(self, *args, **kwargs):
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                progress = train_epoch(self, *args, **kwargs)
            torch.cuda.set_sync_debug_mode("default")
            found["syncs"] += sum("synchroniz" in str(w.message) for w in caught)
        else:
            with HostReads() as reads:
                progress = train_epoch(self, *args, **kwargs)
            found["syncs"] += reads.count  # the data loader's own reads included
        found["steps"] += progress.steps
        return progress

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        after_epoch(self, *args, **kwargs)
        found["checkpoint_s"] += time.perf_counter() - start
        found["epochs"] += 1

    Loop.train_epoch, Checkpoints.after_epoch = counted, timed
    try:
        yield
    finally:
        Loop.train_epoch, Checkpoints.after_epoch = train_epoch, after_epoch


def ftkit_run(spec: dict, device: str, fast: bool, samples: int, **extra: Any) -> dict:
    found: dict[str, float] = {}
    # the run's own lines go to stderr: stdout is the JSON object alone
    with tempfile.TemporaryDirectory() as out, watched(device, found), redirect_stdout(sys.stderr):
        outcome = ftkit.run(
            **spec, device=device, epochs=2, num_samples=samples, strategy="full", lr=1e-4,
            augment="none", amp="bf16" if fast else "off", channels_last=fast,
            out=f"{out}/run", **extra,
        )  # fmt: skip
        rows = [json.loads(line) for line in (outcome.dir / "metrics.jsonl").open()]
    return {
        "images_per_s": rows[-1]["images_per_second"],
        "host_syncs_per_step": found["syncs"] / max(found["steps"], 1),
        "checkpoint_blocking_s_per_epoch": found["checkpoint_s"] / max(found["epochs"], 1),
    }


def plain_loop(spec: dict, device: str, fast: bool, steps: int) -> float:
    """Images/s of the loop a practitioner writes, on random batches on the device."""
    model = build_model(spec["model"], num_classes=5, task=spec["task"], plugins=Plugins())
    model.to(device).train()
    if fast:
        model.to(memory_format=torch.channels_last)
    fused = device in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    size, batch = spec["image_size"], spec["batch_size"]
    x = torch.randn(batch, 3, size, size, device=device)
    if fast:
        x = x.contiguous(memory_format=torch.channels_last)
    if spec["task"] == "segmentation":
        y = torch.randint(0, 5, (batch, size, size), device=device)
    else:
        y = torch.randint(0, 5, (batch,), device=device)
    amp = torch.autocast(device, dtype=torch.bfloat16, enabled=fast)

    def step() -> None:
        with amp:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def lightning_loop(spec: dict, device: str, fast: bool, steps: int) -> float | str:
    if importlib.util.find_spec("lightning") is None:
        return "skipped: pip install -e '.[bench]'"
    import lightning as L

    model = build_model(spec["model"], num_classes=5, task=spec["task"], plugins=Plugins())
    size, batch = spec["image_size"], spec["batch_size"]
    shape = (batch, size, size) if spec["task"] == "segmentation" else (batch,)
    data = [(torch.randn(batch, 3, size, size), torch.randint(0, 5, shape))] * (steps + 2)
    batches = torch.utils.data.DataLoader(data, batch_size=None)  # each item a whole batch

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, data, index):
            return torch.nn.functional.cross_entropy(self.model(data[0]), data[1])

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-4)

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, module, data, index) -> None:
            if index == 2:  # after the warm-up
                _sync(device)
                self.start = time.perf_counter()

        def on_train_end(self, trainer, module) -> None:
            _sync(device)
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L.Trainer(
            accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_epochs=1,
            precision="bf16-mixed" if fast else "32-true", logger=False,
            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
            callbacks=[clock], default_root_dir=out,
        ).fit(Module(), train_dataloaders=batches)  # fmt: skip
    return steps * batch / clock.seconds


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def check(device: str, quick: bool) -> dict:
    specs, steps, samples = (QUICK, 4, 24) if quick else (FULL, 30, 320)
    result: dict[str, Any] = {"device": device, "torch": torch.__version__, "quick": quick}
    if device == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    for spec in specs:
        for fast in (False, True):
            key = f"{spec['model']}@{spec['image_size']}" + (" bf16+channels_last" if fast else "")
            entry = ftkit_run(spec, device, fast, samples)
            entry["plain_images_per_s"] = plain_loop(spec, device, fast, steps)
            entry["lightning_images_per_s"] = lightning_loop(spec, device, fast, steps)
            result[key] = entry
            print(key, entry, file=sys.stderr, flush=True)
    first = specs[0]
    name = f"{first['model']}@{first['image_size']} bf16+channels_last --compile"
    if quick:  # compiling takes minutes on a CPU
        result[name] = "skipped with --quick"
    else:
        result[name] = ftkit_run(first, device, True, samples, compile=True)["images_per_s"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny models and images")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --device cpu --quick", file=sys.stderr)
        return 2
    print(json.dumps(check(args.device, args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
