"""ftkit's benchmark suite: every figure of docs/performance.md, one command.

    python tools/bench.py [--quick] [--out bench.json]

Each figure is a ratio measured side by side in this one run, on this
machine, so that machine speed cancels out:

- overhead: s/epoch of `ftkit run` / a plain PyTorch loop doing the same work,
            and / a Lightning Trainer doing it (with its default checkpoint,
            whose cost is Lightning / Lightning without it); needs the
            `bench` extra, else that reference is skipped
- frozen:   s/epoch of two-stage's stage 1 (encoder frozen) / a full epoch
- memory:   peak RSS of `freeze` and `two-stage` / `full`
- metrics:  share of evaluation time spent accumulating metrics
- start-up: `ftkit --help`, `strategies`, `plugins` in seconds
- data:     start-up, memory and loader speed on 1,000 to 50,000 files (tools/bench_data.py)

Not a test: it takes minutes. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_data import SIZES, data_rows, data_scale  # noqa: E402
from bench_overhead import overhead  # noqa: E402
from bench_startup import COMMANDS, median_seconds  # noqa: E402

from ftkit.config import Config  # noqa: E402
from ftkit.engine.run import start  # noqa: E402
from ftkit.metrics import SegmentationMetrics  # noqa: E402
from ftkit.plugins.manager import Plugins  # noqa: E402
from ftkit.prepare import model_data, prepare  # noqa: E402


def train_seconds(config: Config) -> list[dict]:
    """The records of a run: each holds its training seconds and stage."""
    with tempfile.TemporaryDirectory() as out:
        assert start(replace(config, out=f"{out}/run"), Plugins()) == 0
        lines = Path(out, "run", "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def frozen_ratio(base: Config, epochs: int) -> dict:
    staged = train_seconds(
        replace(
            base,
            strategy="two-stage",
            epochs=2 * epochs,
            strategy_options={"stage1_epochs": epochs},
        )
    )
    full = train_seconds(replace(base, strategy="full", epochs=epochs))
    frozen = statistics.median(r["seconds"] for r in staged[1:epochs])
    whole = statistics.median(r["seconds"] for r in full[1:])
    return {"stage1_s_per_epoch": frozen, "full_s_per_epoch": whole, "ratio": frozen / whole}


def peak_rss_mb(args: list[str]) -> float:
    """Peak resident memory of one `ftkit run` process."""
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
        "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN)"
        ".ru_maxrss)"
    )
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                probe,
                sys.executable,
                "-m",
                "ftkit",
                "run",
                *args,
                "--out",
                f"{out}/run",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    return int(result.stdout.strip()) / 1024


def memory(args: list[str]) -> dict:
    full = peak_rss_mb([*args, "--strategy", "full"])
    out = {"full_mb": full}
    for name, extra in [("freeze", []), ("two-stage stage 1", ["-o", "stage1_epochs=1"])]:
        strategy = name.split()[0]
        mb = peak_rss_mb([*args, "--strategy", strategy, *extra])
        out[f"{name}_mb"], out[f"{name}_ratio"] = mb, mb / full
    return out


def metrics_share(base: Config) -> dict:
    plugins = Plugins()
    prepared = prepare(base, plugins)
    data = model_data(prepared, plugins)
    loader = torch.utils.data.DataLoader(data.val, batch_size=base.batch_size)
    model = prepared.model.eval()
    batches = [(x, y) for x, y in loader]
    with torch.no_grad():
        t0 = time.perf_counter()
        outputs = [(model(x), y) for x, y in batches]
        forward = time.perf_counter() - t0
        metrics = SegmentationMetrics(prepared.num_classes)
        t0 = time.perf_counter()
        for logits, y in outputs:
            metrics.update(logits, y)
        metrics.compute()
        accumulate = time.perf_counter() - t0
    return {
        "forward_s": forward,
        "metrics_s": accumulate,
        "share": accumulate / (forward + accumulate),
    }


def cached_speedup(base: Config, epochs: int) -> dict:
    """Epochs after the first, with and without cached features."""
    out = {}
    cases = {
        "linear probe (tv:resnet18, freeze)": replace(
            base, task="classification", model="tv:resnet18", strategy="freeze"
        ),
        "two-stage stage 1 (U-Net)": replace(
            base, strategy="two-stage", strategy_options={"stage1_epochs": epochs}
        ),
    }
    for name, config in cases.items():
        config = replace(config, augment=False, epochs=epochs + (config.strategy == "two-stage"))
        seconds = {}
        for mode in ("off", "auto"):
            records = train_seconds(replace(config, cache_features=mode))[:epochs]
            seconds[mode] = statistics.median(r["seconds"] for r in records[1:])
        out[name] = {
            "uncached_s": seconds["off"],
            "cached_s": seconds["auto"],
            "speedup": seconds["off"] / seconds["auto"],
        }
    return out


SECTIONS = ("overhead", "frozen", "memory", "metrics", "startup", "cache", "data")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and samples")
    parser.add_argument("--out", type=Path, default=Path("bench.json"))
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections of {', '.join(SECTIONS)}",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    samples, epochs = (96, 2) if args.quick else (256, 3)
    base = Config(
        lr=1e-4,
        image_size=64,
        num_samples=samples,
        clip_grad_norm=1.0,
        device="cpu",
        strategy_options={"schedule": "constant"},
    )
    results: dict = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": base.model_spec,
        "image_size": 64,
        "num_samples": samples,
    }

    if "overhead" in only:
        results["overhead"] = overhead(replace(base, strategy="full", epochs=epochs + 1))
    if "frozen" in only:
        results["frozen"] = frozen_ratio(base, epochs)
    if "memory" in only:
        results["memory"] = memory(
            ["--image-size", "64", "--num-samples", str(samples), "--epochs", "2"]
        )
    if "metrics" in only:
        results["metrics"] = metrics_share(base)
    if "startup" in only:
        results["startup_s"] = {name: median_seconds(cmd, 7) for name, cmd in COMMANDS.items()}
    if "cache" in only:
        results["cache"] = cached_speedup(base, epochs)
    if "data" in only:  # tools/bench_data.py: 1,000 to 50,000 files (--quick: to 10,000)
        results["data"] = data_scale(SIZES[:2] if args.quick else SIZES)

    args.out.write_text(json.dumps(results, indent=2) + "\n")
    rows = []
    if "overhead" in results:
        o = results["overhead"]
        rows.append(
            (
                "engine overhead, ftkit / plain s per epoch",
                f"{o['ratio']:.3f} ({o['ftkit_s_per_epoch']:.2f} / {o['plain_s_per_epoch']:.2f} s)",
                "<= 1.02",
            )
        )
        rows.append(
            (
                "engine overhead with `--save-every EPOCHS`, ftkit / plain s per epoch",
                f"{o['save_at_end_ratio']:.3f} ({o['ftkit_save_at_end_s_per_epoch']:.2f} / "
                f"{o['plain_s_per_epoch']:.2f} s)",
                "<= 1.02",
            )
        )
        rows.append(
            (
                "engine overhead with `--checkpoint-writer async`, ftkit / plain s per epoch",
                f"{o['async_writer_ratio']:.3f} ({o['ftkit_async_writer_s_per_epoch']:.2f} / "
                f"{o['plain_s_per_epoch']:.2f} s)",
                "",
            )
        )
        if "ftkit_over_lightning" in o:
            rows.append(
                (
                    "engine overhead, ftkit / Lightning (default checkpoint) s per epoch",
                    f"{o['ftkit_over_lightning']:.3f} ({o['ftkit_s_per_epoch']:.2f} / "
                    f"{o['lightning_s_per_epoch']:.2f} s)",
                    "<= 1.0",
                )
            )
            rows.append(
                (
                    "Lightning's checkpoint, with / without s per epoch",
                    f"{o['lightning_over_no_checkpoint']:.3f} ({o['lightning_s_per_epoch']:.2f}"
                    f" / {o['lightning_no_checkpoint_s_per_epoch']:.2f} s)",
                    "",
                )
            )
    if "frozen" in results:
        f = results["frozen"]
        rows.append(
            (
                "frozen-encoder epoch / full epoch",
                f"{f['ratio']:.3f} ({f['stage1_s_per_epoch']:.2f} / {f['full_s_per_epoch']:.2f} s)",
                "<= 0.65",
            )
        )
    if "memory" in results:
        m = results["memory"]
        rows.append(
            (
                "peak memory, freeze (= two-stage stage 1) / full",
                f"{m['freeze_ratio']:.2f} ({m['freeze_mb']:.0f} / {m['full_mb']:.0f} MB)",
                "",
            )
        )
        rows.append(
            ("peak memory, a two-stage run / full", f"{m['two-stage stage 1_ratio']:.2f}", "")
        )
    if "metrics" in results:
        rows.append(
            (
                "metric accumulation, share of evaluation",
                f"{100 * results['metrics']['share']:.2f}%",
                "<= 2%",
            )
        )
    for k, v in results.get("startup_s", {}).items():
        rows.append((f"start-up `{k}`", f"{v:.3f} s", "< 0.3 s" if "ftkit" in k else ""))
    for k, v in results.get("cache", {}).items():
        rows.append(
            (
                f"cached features, {k}: uncached / cached s per epoch",
                f"{v['speedup']:.1f}x ({v['uncached_s']:.2f} / {v['cached_s']:.2f} s)",
                ">= 5x",
            )
        )
    if "data" in results:
        rows += data_rows(results["data"])
    print("| figure | value | target |\n|---|---|---|")
    print("\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
