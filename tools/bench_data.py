"""Data at scale (``python tools/bench.py --only data``): folders of 1,000,
10,000 and 50,000 generated images for both tasks, and for each

- the first ``ftkit plan`` on it (an empty FTKIT_CACHE: the parallel pass over
  every file) and the second (the cache warm), in wall seconds;
- the peak RSS of a one-epoch ``ftkit run``;
- ftkit's training loader in images/s against ``torchvision.datasets.ImageFolder``
  + ``DataLoader`` with the same workers, batch size and transforms
  (classification, whose layout ImageFolder reads).

The folders are generated once into the user cache folder
(``platformdirs.user_cache_dir("ftkit")/bench-data``), never into the
repository; delete that folder to regenerate. Not a test: it takes many
minutes. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SIZES = (1_000, 10_000, 50_000)
IMAGE = (64, 48)  # width, height: small, not square
CLASSES = 4
BATCH = 64


def cache_root() -> Path:
    import platformdirs

    return (
        Path(os.environ.get("FTKIT_BENCH_DATA") or platformdirs.user_cache_dir("ftkit"))
        / "bench-data"
    )


def _write(job: tuple[str, Path, int, int]) -> None:
    from PIL import Image

    task, root, start, stop = job
    w, h = IMAGE
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        label = i % CLASSES
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pixels[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (60 * label, 255 - 60 * label, 128)
        if task == "classification":
            Image.fromarray(pixels).save(root / f"c{label}" / f"{i:06d}.png", compress_level=1)
            continue
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1 + label % (CLASSES - 1)
        Image.fromarray(pixels).save(root / "images" / f"{i:06d}.png", compress_level=1)
        Image.fromarray(mask).save(root / "masks" / f"{i:06d}.png", compress_level=1)


def folder(task: str, n: int) -> Path:
    """A folder of ``n`` generated samples, made once (a marker says it is whole)."""
    root = cache_root() / f"{task}-{n}"
    if (root / ".complete").exists():
        return root
    subdirs = [f"c{c}" for c in range(CLASSES)] if task == "classification" else ["images", "masks"]
    for sub in subdirs:
        (root / sub).mkdir(parents=True, exist_ok=True)
    step = 2_000
    jobs = [(task, root, s, min(s + step, n)) for s in range(0, n, step)]
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(_write, jobs))
    (root / ".complete").write_text("")
    return root


def _ftkit(args: list[str], cache: Path) -> tuple[float, float]:
    """Wall seconds and the child's peak RSS (MB) of ``ftkit ARGS``."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    env = {**os.environ, "FTKIT_CACHE": str(cache), "FTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    out = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "ftkit", *args],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    seconds, rss = out.stdout.split()
    return float(seconds), int(rss) / 1024


def _task_args(task: str, root: Path) -> list[str]:
    model = ["--model", "tv:resnet18"] if task == "classification" else []
    return ["--task", task, "--data", str(root), "--image-size", "32", *model]


def loader_images_per_second(root: Path, workers: int, batches: int) -> dict:
    """ftkit's training loader against ImageFolder + DataLoader: the same
    transforms (ftkit's own, applied to the decoded image), workers, batch size."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision.transforms import v2

    from ftkit.configure import make_config
    from ftkit.engine.train.distributed import World
    from ftkit.engine.train.loaders import loaders
    from ftkit.plugins.manager import Plugins
    from ftkit.prepare import model_data, prepare

    config = make_config(
        None, (), (),
        {"task": "classification", "data": str(root), "image_size": 32, "model": "tv:resnet18",
         "batch_size": BATCH, "workers": str(workers), "val_fraction": 0.2},
    )  # fmt: skip
    data = model_data(prepare(config, Plugins()))
    _, ours, _ = loaders(config, data, World(), torch.device("cpu"))
    train = data.train
    size = (IMAGE[1], IMAGE[0])
    transform = v2.Compose([v2.PILToTensor(), train.transform(size)])
    reference = DataLoader(
        datasets.ImageFolder(str(root), transform=transform),
        batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers,
        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip

    def rate(loader) -> float:
        it = iter(loader)
        next(it)  # workers started, first batch out: the steady state is what counts
        start, images = time.perf_counter(), 0
        for _ in range(batches):
            x, _ = next(it)
            images += len(x)
        return images / (time.perf_counter() - start)

    runs = {"ftkit": [], "imagefolder": []}
    for _ in range(5):  # alternated, so a busy moment hurts both
        runs["ftkit"].append(rate(ours))
        runs["imagefolder"].append(rate(reference))
    best = {k: max(v) for k, v in runs.items()}
    return {
        **{f"{k}_images_per_s": v for k, v in best.items()},
        "ratio": best["ftkit"] / best["imagefolder"],
    }


def data_scale(sizes: tuple[int, ...] = SIZES, batches: int = 60) -> dict:
    from ftkit.configure import make_config
    from ftkit.resolve import loader_settings

    results: dict = {"sizes": list(sizes), "image": list(IMAGE)}
    for task in ("segmentation", "classification"):
        rows = []
        for n in sizes:
            root = folder(task, n)
            with tempfile.TemporaryDirectory() as cache:
                first, _ = _ftkit(["plan", *_task_args(task, root)], Path(cache))
                second, _ = _ftkit(["plan", *_task_args(task, root)], Path(cache))
                with tempfile.TemporaryDirectory() as out:
                    run = ["run", *_task_args(task, root), "--strategy", "full"]
                    run += ["--epochs", "1", "--batch-size", str(BATCH)]
                    seconds, rss = _ftkit([*run, "--out", f"{out}/r"], Path(cache))
            rows.append(
                {"files": n, "first_plan_s": first, "second_plan_s": second,
                 "one_epoch_run_s": seconds, "peak_rss_mb": rss}
            )  # fmt: skip
            print(task, rows[-1], flush=True)
        results[task] = rows
    workers = loader_settings(
        make_config(None, (), (), {"data": str(folder("classification", sizes[0]))}), "cpu"
    ).workers
    results["loader"] = {
        "workers": workers,
        **loader_images_per_second(folder("classification", sizes[-1]), workers, batches),
    }
    print("loader", results["loader"], flush=True)
    return results


def data_rows(results: dict) -> list[tuple[str, str, str]]:
    rows = []
    for task in ("segmentation", "classification"):
        first, last = results[task][0], results[task][-1]
        for r in results[task]:
            what = f"{task}, {r['files']:,} files: first / second `plan`; one-epoch run peak RSS"
            value = (
                f"{r['first_plan_s']:.1f} / {r['second_plan_s']:.1f} s; {r['peak_rss_mb']:.0f} MB"
            )
            rows.append((what, value, "second < 5 s" if r is last else ""))
        added = last["files"] - first["files"]
        per_file = (last["first_plan_s"] - first["first_plan_s"]) / added * 1e3
        rows.append(
            (
                f"{task}, growth {first['files']:,} -> {last['files']:,} files",
                f"second plan {last['second_plan_s'] - first['second_plan_s']:+.1f} s, "
                f"peak RSS {last['peak_rss_mb'] - first['peak_rss_mb']:+.0f} MB, "
                f"first plan {per_file:.2f} ms per added file",
                "RSS < +150 MB",
            )
        )
    loader = results["loader"]
    ours, theirs = loader["ftkit_images_per_s"], loader["imagefolder_images_per_s"]
    rows.append(
        (
            f"training loader images/s, {loader['workers']} worker(s): ftkit / ImageFolder",
            f"{loader['ratio']:.2f} ({ours:.0f} / {theirs:.0f})",
            ">= 0.95",
        )
    )
    return rows
