"""Run the seeds' recipes (docs/recipes.md) as ``ftkit run`` commands and fill in their table.

    python tools/recipes.py --out recipes-runs/ [--doc docs/recipes.md] [--quick] [--only NAME,...]

Each recipe of the study notes (seeds 000, 001, 003 and 004) is one ``ftkit
run`` command on ImageNet-pretrained MobileNetV2 at CPU scale: the elpv
solar-cell defect folder (classification, 300 train / 200 val images at 80 px)
or, for seed 004's loss switch, the animal-silhouette segmentation folder, both
built by ``tools/realdata.py`` into ``--work`` (never the repository: the elpv
images are CC-BY-NC-SA 4.0 and must not be committed).

The recipes run one after another, each on ``--threads`` CPU threads. The
figures (final val accuracy and macro-F1, or mIoU; epochs; median seconds per
epoch; wall time) go to ``OUT/recipes.json`` and ``OUT/recipes.md``; with
``--doc`` the commands and the table are rewritten between the markers
``<!-- recipes-commands:begin/end -->`` and ``<!-- recipes:begin/end -->`` of
that file. ``--quick`` checks every command on tiny data for 2-4 epochs.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realdata  # noqa: E402
from bench_strategies import read_json, read_run, table, update_doc  # noqa: E402

# Regroups of MobileNetV2's 19 feature blocks into ResNet-like stages by output
# stride (stride 2-4, 4, 8, 16, 32): "layer4" is the stride-32 stage,
# features.14-18 (75% of the backbone's weights, as layer4 is of a ResNet-18's).
STAGES = (
    r"regroup=stem=features\.[01]\.;layer1=features\.[23]\.;layer2=features\.[4-6]\.;"
    r"layer3=features\.([7-9]|1[0-3])\.;layer4=features\.;head=classifier"
)
LAYER4_SPLIT = r"regroup=rest=features\.([0-9]|1[0-3])\.;layer4=features\.;head=classifier"

CLASSIFICATION = [
    "--task", "classification", "--model", "tv:mobilenet_v2", "--weights", "{weights}",
    "--data", "{elpv}", "--image-size", "80", "--batch-size", "16", "--seed", "0",
    "--device", "cpu",
]  # fmt: skip
SEGMENTATION = [
    "--task", "segmentation", "--model", "smp:unet:mobilenet_v2", "--weights", "{weights}",
    "--data", "{animals}", "--image-size", "64", "--batch-size", "16", "--seed", "0",
    "--device", "cpu",
]  # fmt: skip

# The loss switch starts from the baseline's weights (--from): no --weights.
FROM_BASELINE = [w for w in SEGMENTATION if w not in ("--weights", "{weights}")]


@dataclass(frozen=True)
class Recipe:
    name: str
    seed: str  # which study note, and what it says
    common: tuple[str, ...]
    args: tuple[str, ...]
    epochs: int
    quick_epochs: int
    quick_args: tuple[str, ...] = ()  # replace args in --quick (stage lengths)


RECIPES = (
    Recipe(
        "000-discriminative",
        "000: 4-group discriminative LRs x0.01/x0.1/x1/x10 of 1e-3, 3 warmup epochs then "
        "cosine, AdamW weight decay 1e-2",
        tuple(CLASSIFICATION),
        (
            "--strategy",
            "discriminative",
            "--lr",
            "1e-3",
            "--optimizer",
            "adamw",
            "-o",
            "multipliers=0.01,0.1,1,10",
            "-o",
            "schedule=warmup-cosine",
            "-o",
            "warmup_epochs=3",
            "-o",
            "weight_decay=0.01",
        ),
        10,
        4,
    ),
    Recipe(
        "001-feature-extraction",
        "001: feature extraction, backbone frozen, new head at 1e-3",
        tuple(CLASSIFICATION),
        ("--strategy", "freeze", "--lr", "1e-3"),
        10,
        2,
    ),
    Recipe(
        "001-layer4-one-lr",
        "001: unfreeze 'layer4' (features.14-18) + head, one LR 1e-4",
        tuple(CLASSIFICATION),
        ("--strategy", "freeze", "--lr", "1e-4", "-o", "train_from=features.14"),
        10,
        2,
    ),
    Recipe(
        "001-layer4-1e-4-head-1e-3",
        "001: 'layer4' at 1e-4, head at 1e-3, the rest frozen (multiplier 0)",
        tuple(CLASSIFICATION),
        (
            "--strategy",
            "discriminative",
            "--lr",
            "1e-4",
            "-o",
            LAYER4_SPLIT,
            "-o",
            "multipliers=0,1,10",
        ),
        10,
        2,
    ),
    Recipe(
        "001-gradual",
        "000/001: gradual unfreezing: head, then +layer4, +layer3, +layer2 at epochs 4, 7, 10",
        tuple(CLASSIFICATION),
        ("--strategy", "gradual", "--lr", "3e-4", "-o", "every=3", "-o", STAGES),
        10,
        4,
        ("--strategy", "gradual", "--lr", "3e-4", "-o", "every=1", "-o", STAGES),
    ),
    Recipe(
        "003-linear-probe",
        "003: linear probe, head only at 1e-2 (the top of 1e-3..1e-2)",
        tuple(CLASSIFICATION),
        ("--strategy", "freeze", "--lr", "1e-2"),
        10,
        2,
    ),
    Recipe(
        "003-full",
        "003: full fine-tuning at one low LR, 5e-5 (the top of 1e-5..5e-5)",
        tuple(CLASSIFICATION),
        ("--strategy", "full", "--lr", "5e-5"),
        10,
        2,
    ),
    Recipe(
        "003-llrd",
        "003: LLRD, base 1e-4, decay 0.9 per block (head 1e-4 ... features.0 1.4e-5)",
        tuple(CLASSIFICATION),
        ("--strategy", "llrd", "--lr", "1e-4", "-o", "decay=0.9"),
        10,
        2,
    ),
    Recipe(
        "004-baseline",
        "004: the converged baseline: U-Net, everything at 1e-3, plain cross-entropy",
        tuple(SEGMENTATION),
        ("--strategy", "full", "--lr", "1e-3", "--loss", "ce"),
        12,
        2,
    ),
    Recipe(
        "004-loss-switch",
        "004: from the baseline, ce+dice with automatic class weights, head 3e-6, then "
        "backbone 1.5e-7 and head 6e-7",
        tuple(FROM_BASELINE),
        (
            "--strategy",
            "loss-switch",
            "--from",
            "{runs}/004-baseline",
            "--lr",
            "1e-5",
            "-o",
            "stage1_epochs=3",
        ),
        6,
        2,
        (
            "--strategy",
            "loss-switch",
            "--from",
            "{runs}/004-baseline",
            "--lr",
            "1e-5",
            "-o",
            "stage1_epochs=1",
        ),
    ),
)

PLACEHOLDERS = {"weights": "$WEIGHTS", "elpv": "$ELPV", "animals": "$ANIMALS", "runs": "runs"}
BEGIN, END = "<!-- recipes:begin -->", "<!-- recipes:end -->"
CMD_BEGIN, CMD_END = "<!-- recipes-commands:begin -->", "<!-- recipes-commands:end -->"


def arguments(recipe: Recipe, quick: bool, values: dict[str, str]) -> list[str]:
    args = recipe.quick_args if quick and recipe.quick_args else recipe.args
    epochs = recipe.quick_epochs if quick else recipe.epochs
    # A word may mix a placeholder with literal braces ({0-9} in a regex): only
    # the known names are replaced.
    out = []
    for word in (*recipe.common, *args, "--epochs", str(epochs)):
        for key, value in values.items():
            word = word.replace("{" + key + "}", value)
        out.append(word)
    return out


def shown(recipe: Recipe) -> str:
    """The recipe as a user types it, with $WEIGHTS, $ELPV and $ANIMALS."""
    words = [
        "ftkit",
        "run",
        *arguments(recipe, False, PLACEHOLDERS),
        "--out",
        f"runs/{recipe.name}",
    ]
    text = shlex.join(words)
    for value in PLACEHOLDERS.values():
        if value.startswith("$"):
            text = text.replace(f"'{value}'", f'"{value}"')
    return text


def commands_block() -> str:
    lines = []
    for recipe in RECIPES:
        lines.append(f"# {recipe.seed}")
        lines.append(shown(recipe))
        lines.append("")
    return "```bash\n" + "\n".join(lines).rstrip() + "\n```\n"


def run_recipe(
    recipe: Recipe, out: Path, values: dict[str, str], quick: bool, env: dict[str, str]
) -> dict[str, Any]:
    run_dir = out / recipe.name
    args = arguments(recipe, quick, values)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    log = out / f"{recipe.name}.log"
    print(f"\n$ {shown(recipe)}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        command = [sys.executable, "-m", "ftkit", "run", *args, "--out", str(run_dir)]
        code = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - start
    task = args[args.index("--task") + 1]
    result = read_run(run_dir, task)
    summary = read_json(run_dir / "summary.json") or {}
    baseline = (summary.get("baseline") or {}).get("val_miou")
    result.update(
        name=recipe.name,
        task=task,
        exit_code=code,
        wall_seconds=round(wall, 1),
        baseline_miou=baseline,
        diagnosis=summary.get("diagnosis"),
    )
    metric = result.get("metric")
    print(
        f"exit code {code}, metric {metric if metric is None else round(metric, 4)}, "
        f"{wall:.0f} s; output in {log}",
        flush=True,
    )
    return result


def results_table(results: list[dict[str, Any]], recipes: list[Recipe]) -> str:
    rows = []
    for recipe, r in zip(recipes, results, strict=True):
        if r["task"] == "classification":
            metric = f"acc {r['metric']:.3f}" if r.get("metric") is not None else None
            f1 = f"{r['macro_f1']:.3f}" if r.get("macro_f1") is not None else None
        else:
            metric = f"mIoU {r['metric']:.3f}" if r.get("metric") is not None else None
            if metric and r.get("baseline_miou") is not None:
                metric += f" (from {r['baseline_miou']:.3f})"
            f1 = None
        sec = r.get("seconds_per_epoch")
        rows.append(
            [
                recipe.name,
                metric,
                f1,
                r.get("epochs_run"),
                f"{sec:.1f}" if sec is not None else None,
                f"{r['wall_seconds']:.0f}",
                r["exit_code"]
                if not r.get("diagnosis")
                else f"{r['exit_code']} ({r['diagnosis']})",
            ]
        )
    header = [
        "recipe",
        "val metric (final epoch)",
        "macro-F1",
        "epochs",
        "s/epoch",
        "wall s",
        "exit",
    ]
    return table(header, rows, "lrrrrrl")


def main() -> int:
    parser = realdata.benchmark_parser(
        __doc__, "recipes-runs", "tiny data, 2-4 epochs: checks each command"
    )
    parser.add_argument("--only", help="comma list of recipe names")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per run (default 2)")
    parser.add_argument("--doc", type=Path, help="rewrite the commands and table in this file")
    parser.add_argument(
        "--commands-only", action="store_true", help="with --doc: only rewrite the commands"
    )
    opts = parser.parse_args()

    if opts.doc and opts.commands_only:
        update_doc(opts.doc, commands_block(), CMD_BEGIN, CMD_END)
        print(f"commands written into {opts.doc}")
        return 0
    if opts.quick:
        elpv = realdata.elpv_folder(opts.work, 32, 32)
        animals = realdata.animal_seg_folder(opts.work, 32, 16, 64)
    else:
        elpv = realdata.elpv_folder(opts.work, 300, 200)
        animals = realdata.animal_seg_folder(opts.work, 300, 100, 64)
    values = {
        "weights": str(realdata.mobilenet_weights()),
        "elpv": str(elpv),
        "animals": str(animals),
        "runs": str(opts.out),
    }
    wanted = set(opts.only.split(",")) if opts.only else None
    recipes = [r for r in RECIPES if wanted is None or r.name in wanted]
    threads = str(opts.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    opts.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    results = [run_recipe(r, opts.out, values, opts.quick, env) for r in recipes]
    total = time.perf_counter() - start
    mode = "--quick (tiny data: not figures)" if opts.quick else "full"
    text = (
        results_table(results, recipes)
        + f"\n\nRun {mode} by `python tools/recipes.py`: {total / 60:.1f} min in all, "
        f"{opts.threads} CPU thread(s).\n"
    )
    print("\n" + text)
    (opts.out / "recipes.md").write_text(text)
    (opts.out / "recipes.json").write_text(
        json.dumps(
            {
                "quick": opts.quick,
                "threads": opts.threads,
                "data": values,
                "total_wall_seconds": round(total, 1),
                "results": results,
            },
            indent=1,
        )
        + "\n"
    )
    if opts.doc:
        update_doc(opts.doc, commands_block(), CMD_BEGIN, CMD_END)
        update_doc(opts.doc, text, BEGIN, END)
        print(f"commands and table written into {opts.doc}")
    return 1 if any(r["exit_code"] != 0 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
