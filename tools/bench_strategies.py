"""Which fine-tuning strategy wins on a few hundred real images, and by how much?

    python tools/bench_strategies.py --out bench-strategies/ [--plot docs/strategies.png] \\
        [--doc docs/strategies.md] [--quick] [--jobs 2] [--only classification]

What it measures (the tables of docs/strategies.md):

- classification, seed 001's case (a manufacturing-defect classifier from a few
  hundred images): elpv solar-cell electroluminescence images, ``functional``
  vs ``defective``, 300 stratified training images and a fixed validation set
  of 200. MobileNetV2 pretrained on ImageNet (``--weights``, torchvision's file)
  against the same network randomly initialised (the control), for the
  strategies freeze (linear probe), full, discriminative, two-stage (linear
  probe, then fine-tune), gradual and llrd, each over 3 seeds.
- segmentation: a U-Net with the pretrained MobileNetV2 encoder against a
  random encoder, on animal silhouettes pasted on textured canvases
  (animal-shape-mnist), strategies freeze (encoder frozen), two-stage and full,
  3 seeds each.

Per run it reads the run directory ``ftkit run`` writes: the final epoch's
``val_accuracy`` and ``val_macro_f1`` (or ``val_miou``) from ``summary.json``
(macro-F1 recomputed from the recorded confusion matrix where a run lacks
it), the median of the epochs' ``seconds`` (training time per epoch) from
``metrics.jsonl``, and the trainable parameters of each stage from
``plan.json``. It reports mean, standard deviation and min-max over seeds,
names the winner and its margin, writes everything to ``OUT/results.json``
and ``OUT/tables.md``, and with ``--doc`` rewrites the part of that file
between ``<!-- strategies:begin -->`` and ``<!-- strategies:end -->``.

Runs are subprocesses of the real CLI (``python -m ftkit run ... --out DIR``),
``--jobs`` at a time, each on ``--threads`` CPU threads; a run whose directory
already holds a ``summary.json`` with the same command is not run again, so
an interrupted benchmark continues where it stopped.

Data: built once by ``tools/realdata.py`` into ``--work`` (default
``~/.cache/ftkit-bench``), never into the repository. The elpv images are
licensed CC-BY-NC-SA 4.0: they are read from the installed ``elpv-dataset``
at benchmark time and must not be committed; animal-shape-mnist is MIT.

Not a test: the full benchmark takes about half an hour on 2 CPU cores (see
docs/strategies.md for how its size was chosen). ``--quick`` checks the
plumbing in a few minutes: tiny data, 2 epochs, one seed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realdata  # noqa: E402

BEGIN, END = "<!-- strategies:begin -->", "<!-- strategies:end -->"
INITS = ("pretrained", "random")

# The full benchmark. Sizes were chosen from timed 1-2 epoch runs on a
# 2-core CPU (docs/strategies.md, "How the size was chosen").
FULL = {
    "classification": {
        "n_train": 300,
        "n_val": 200,
        "image_size": 80,
        "epochs": 10,
        "batch_size": 16,
        "seeds": [0, 1, 2],
    },
    "segmentation": {
        "n_train": 300,
        "n_val": 100,
        "image_size": 64,
        "epochs": 10,
        "batch_size": 16,
        "seeds": [0, 1, 2],
    },
}
QUICK = {
    "classification": {
        "n_train": 32,
        "n_val": 32,
        "image_size": 32,
        "epochs": 2,
        "batch_size": 16,
        "seeds": [0],
    },
    "segmentation": {
        "n_train": 32,
        "n_val": 16,
        "image_size": 32,
        "epochs": 2,
        "batch_size": 16,
        "seeds": [0],
    },
}


@dataclass(frozen=True)
class Arm:
    """One strategy with its base LR and options: the same for both inits."""

    task: str
    strategy: str
    lr: float
    options: tuple[str, ...] = ()
    note: str = ""


# Base LRs for AdamW on a pretrained network, from the seeds: a linear probe's
# head ~1e-3 (001, 003); a full fine-tune ~1e-4 (001, 003); discriminative
# base 1e-3 with x0.01/x0.1/x1/x10 (000); the random control uses the same.
CLASSIFICATION_ARMS = (
    Arm("classification", "freeze", 1e-3, note="head only (linear probe)"),
    Arm("classification", "full", 1e-4, note="everything at one LR"),
    Arm(
        "classification",
        "discriminative",
        1e-3,
        note="early 1e-5, middle 1e-4, late 1e-3, head 1e-2 (seed 000)",
    ),
    Arm(
        "classification",
        "two-stage",
        1e-3,
        note="head 1e-3; then backbone 5e-5, head 2e-4",
    ),
    Arm(
        "classification",
        "gradual",
        3e-4,
        ("every=2",),
        note="head, then +features.18, .17, .16, .15 every 2 epochs",
    ),
    Arm(
        "classification",
        "llrd",
        1e-3,
        ("decay=0.8",),
        note="head 1e-3 ... features.0 1.4e-5 (19 blocks, x0.8 each)",
    ),
)
SEGMENTATION_ARMS = (
    Arm("segmentation", "freeze", 1e-3, note="encoder frozen, decoder + head at 1e-3"),
    Arm(
        "segmentation",
        "two-stage",
        1e-3,
        note="decoder + head 1e-3; then encoder 5e-5, decoder + head 2e-4",
    ),
    Arm("segmentation", "full", 3e-4, note="everything at one LR"),
)
MODELS = {"classification": "tv:mobilenet_v2", "segmentation": "smp:unet:mobilenet_v2"}
METRIC = {"classification": "val_accuracy", "segmentation": "val_miou"}


@dataclass
class Job:
    arm: Arm
    init: str
    seed: int
    run_dir: Path
    args: list[str]
    result: dict[str, Any] = field(default_factory=dict)


# --- data ---------------------------------------------------------------------


def prepare_data(settings: dict[str, Any], work: Path) -> dict[str, Path]:
    """Build (or find in the cache) each task's dataset folder."""
    folders = {}
    if "classification" in settings:
        s = settings["classification"]
        folders["classification"] = realdata.elpv_folder(work, s["n_train"], s["n_val"])
    if "segmentation" in settings:
        s = settings["segmentation"]
        folders["segmentation"] = realdata.animal_seg_folder(
            work, s["n_train"], s["n_val"], s["image_size"]
        )
    return folders


def majority_accuracy(folder: Path) -> float:
    """Validation accuracy of always answering the largest class."""
    counts = json.loads((folder / "manifest.json").read_text())["counts"]["val"]
    return max(counts.values()) / sum(counts.values())


# --- runs ---------------------------------------------------------------------


def fmt_lr(lr: float) -> str:
    """3e-05 as 3e-5, 0.001 as 1e-3: the way ftkit prints LRs."""
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def jobs_for(
    arms: tuple[Arm, ...], s: dict[str, Any], data: Path, out: Path, weights: Path
) -> list[Job]:
    jobs = []
    for arm in arms:
        for init in INITS:
            for seed in s["seeds"]:
                args = [
                    "--task", arm.task, "--model", MODELS[arm.task], "--data", str(data),
                    "--image-size", str(s["image_size"]), "--epochs", str(s["epochs"]),
                    "--batch-size", str(s["batch_size"]), "--strategy", arm.strategy,
                    "--lr", fmt_lr(arm.lr), "--seed", str(seed), "--device", "cpu",
                ]  # fmt: skip
                for option in arm.options:
                    args += ["-o", option]
                if init == "pretrained":
                    args += ["--weights", str(weights)]
                run_dir = out / arm.task / f"{arm.strategy}-{init}-s{seed}"
                jobs.append(Job(arm, init, seed, run_dir, args))
    return jobs


def run_job(job: Job, env: dict[str, str]) -> dict[str, Any]:
    """One ``ftkit run`` (skipped when its directory already holds a finished
    run of the same command); what its run directory says."""
    command = [sys.executable, "-m", "ftkit", "run", *job.args, "--out", str(job.run_dir)]
    stamp = job.run_dir.with_suffix(".command")
    log = job.run_dir.with_suffix(".log")
    done = (job.run_dir / "summary.json").is_file() and stamp.is_file()
    if done and stamp.read_text() == shlex.join(job.args):
        exit_code, wall = json.loads((job.run_dir / "bench-exit.json").read_text()).values()
    else:
        job.run_dir.parent.mkdir(parents=True, exist_ok=True)
        if job.run_dir.exists():
            shutil.rmtree(job.run_dir)
        start = time.perf_counter()
        with open(log, "w") as fh:
            exit_code = subprocess.run(
                command, stdout=fh, stderr=subprocess.STDOUT, env=env
            ).returncode
        wall = round(time.perf_counter() - start, 1)
        if job.run_dir.is_dir():
            (job.run_dir / "bench-exit.json").write_text(
                json.dumps({"exit_code": exit_code, "wall_seconds": wall})
            )
            stamp.write_text(shlex.join(job.args))
    result = read_run(job.run_dir, job.arm.task)
    result.update(
        exit_code=exit_code,
        wall_seconds=wall,
        weights_note=weights_note(log) if job.init == "pretrained" else None,
        command="ftkit run " + shlex.join(job.args),
    )
    status = "ok" if exit_code == 0 else f"exit code {exit_code}"
    metric = result.get("metric")
    shown = f"{metric:.4f}" if metric is not None else "-"
    print(
        f"  {job.run_dir.name:32s} {status:12s} {METRIC[job.arm.task]} {shown}  {wall:.0f} s",
        flush=True,
    )
    return result


def weights_note(log: Path) -> str | None:
    """ftkit's note when pretrained weights only partly matched the model."""
    if not log.is_file():
        return None
    text = log.read_text()
    found = re.search(r"missing keys \(left as initialised\):.*?and (\d+) more", text)
    if found:
        return f"{int(found.group(1)) + 3} model tensors missing from the weights file"
    loaded = re.search(r"(\d+) tensors into the backbone", text)
    if loaded and int(loaded.group(1)) == 0:
        return "no tensor of the weights file went into the backbone"
    return None


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def read_run(run_dir: Path, task: str) -> dict[str, Any]:
    """The figures of one run directory."""
    summary = read_json(run_dir / "summary.json") or {}
    plan = read_json(run_dir / "plan.json") or {"stages": []}
    metrics = run_dir / "metrics.jsonl"
    records = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.is_file() else []
    records = [r for r in records if r.get("epoch", 0) > 0]  # epoch 0: a baseline's evaluation
    final = summary.get("final") or {}
    seconds = [r["seconds"] for r in records if "seconds" in r]
    out: dict[str, Any] = {
        "metric": final.get(METRIC[task]),
        "best_metric": (summary.get("best") or {}).get(METRIC[task]),
        "epochs_run": summary.get("epochs_run"),
        "stop_reason": summary.get("stop_reason"),
        "seconds_per_epoch": statistics.median(seconds) if seconds else None,
        "train_seconds": round(sum(seconds), 2),
        "trainable_per_stage": [
            sum(g.get("num_params", 0) for g in stage["groups"]) for stage in plan["stages"]
        ],
        "lr_per_stage": [
            {g["name"]: g["lr"] for g in stage["groups"] if "/" not in g["name"]}
            for stage in plan["stages"]
        ],
    }
    if task == "classification":
        out["macro_f1"], out["macro_f1_source"] = macro_f1(final)
    else:
        out["iou_per_class"] = final.get("val_iou_per_class")
    return out


def macro_f1(record: dict[str, Any]) -> tuple[float | None, str]:
    """``val_macro_f1`` as ftkit recorded it, else from the confusion matrix
    (rows: true class, columns: predicted)."""
    if record.get("val_macro_f1") is not None:
        return record["val_macro_f1"], "summary.json val_macro_f1"
    matrix = record.get("val_confusion_matrix")
    if not matrix:
        return None, "not recorded"
    f1s = []
    for k in range(len(matrix)):
        tp = matrix[k][k]
        predicted = sum(row[k] for row in matrix)
        actual = sum(matrix[k])
        f1s.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return sum(f1s) / len(f1s), "confusion matrix"


def run_all(jobs: list[Job], parallel: int, threads: int) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        # built-in strategies only: a plugin installed in the environment must not change them
        "FTKIT_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for job, result in zip(jobs, pool.map(lambda j: run_job(j, env), jobs), strict=True):
            job.result = result


# --- aggregation ----------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def aggregate(jobs: list[Job]) -> list[dict[str, Any]]:
    """One row per (task, strategy, init): mean, std and min-max over seeds."""
    rows = []
    keys = dict.fromkeys((j.arm, j.init) for j in jobs)
    for arm, init in keys:
        mine = [j for j in jobs if j.arm == arm and j.init == init]
        ok = [
            j.result
            for j in mine
            if j.result.get("exit_code") == 0 and j.result.get("metric") is not None
        ]
        row: dict[str, Any] = {
            "task": arm.task,
            "strategy": arm.strategy,
            "init": init,
            "lr": arm.lr,
            "options": list(arm.options),
            "note": arm.note,
            "runs": len(mine),
            "failed": len(mine) - len(ok),
            "trainable_per_stage": mine[0].result.get("trainable_per_stage"),
            "weights_note": next(
                (j.result["weights_note"] for j in mine if j.result.get("weights_note")), None
            ),
        }
        if ok:
            row["metric"] = spread([r["metric"] for r in ok])
            row["seconds_per_epoch"] = spread([r["seconds_per_epoch"] for r in ok])
            if arm.task == "classification":
                f1 = [r["macro_f1"] for r in ok if r.get("macro_f1") is not None]
                row["macro_f1"] = spread(f1) if f1 else None
                row["macro_f1_source"] = ok[0]["macro_f1_source"]
        rows.append(row)
    return rows


def verdict(rows: list[dict[str, Any]], task: str) -> dict[str, Any] | None:
    """The winner among pretrained strategies, its margin over the runner-up,
    and its gain over the same strategy from random initialisation."""
    ranked = sorted(
        (r for r in rows if r["task"] == task and r["init"] == "pretrained" and "metric" in r),
        key=lambda r: -r["metric"]["mean"],
    )
    if not ranked:
        return None
    best = ranked[0]
    control = next(
        (
            r
            for r in rows
            if r["task"] == task
            and r["init"] == "random"
            and r["strategy"] == best["strategy"]
            and "metric" in r
        ),
        None,
    )
    best_random = max(
        (
            r["metric"]["mean"]
            for r in rows
            if r["task"] == task and r["init"] == "random" and "metric" in r
        ),
        default=None,
    )
    second = ranked[1] if len(ranked) > 1 else None
    return {
        "winner": best["strategy"],
        "mean": best["metric"]["mean"],
        "std": best["metric"]["std"],
        "runner_up": second["strategy"] if second else None,
        "margin_points": (best["metric"]["mean"] - second["metric"]["mean"]) * 100
        if second
        else None,
        "within_noise": bool(
            second
            and best["metric"]["mean"] - second["metric"]["mean"]
            <= max(best["metric"]["std"], second["metric"]["std"])
        ),
        "gain_over_random_same_strategy_points": (
            best["metric"]["mean"] - control["metric"]["mean"]
        )
        * 100
        if control
        else None,
        "gain_over_best_random_points": (best["metric"]["mean"] - best_random) * 100
        if best_random is not None
        else None,
    }


# --- report -------------------------------------------------------------------


def table(header: list[str], rows: list[list[Any]], align: str) -> str:
    """A markdown table; ``align`` holds l or r per column."""
    rule = [":---" if a == "l" else "---:" for a in align]
    lines = [header, rule, *([("-" if c is None else str(c)) for c in row] for row in rows)]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def mean_std(s: dict[str, float] | None, scale: float = 1.0, digits: int = 3) -> str | None:
    if not s:
        return None
    return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}"


def min_max(s: dict[str, float] | None) -> str | None:
    return f"{s['min']:.3f}-{s['max']:.3f}" if s else None


def params(row: dict[str, Any]) -> str | None:
    stages = row.get("trainable_per_stage")
    if not stages:
        return None
    shown = [f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}" for n in stages]
    return " → ".join(dict.fromkeys(shown)) if len(set(shown)) > 1 else shown[0]


def lr_cell(row: dict[str, Any]) -> str:
    opts = " ".join(f"`{o}`" for o in row["options"])
    return f"{fmt_lr(row['lr'])} {opts}".strip()


def task_table(rows: list[dict[str, Any]], task: str) -> str:
    name = "accuracy" if task == "classification" else "mIoU"
    header = ["strategy", "init", "--lr", f"val {name} (mean ± std)", "min-max"]
    if task == "classification":
        header.append("macro-F1 (mean ± std)")
    header += ["s/epoch", "trainable params", "failed"]
    body = []
    for r in (r for r in rows if r["task"] == task):
        line = [
            r["strategy"],
            r["init"],
            lr_cell(r),
            mean_std(r.get("metric")),
            min_max(r.get("metric")),
        ]
        if task == "classification":
            line.append(mean_std(r.get("macro_f1")))
        sec = r.get("seconds_per_epoch")
        line += [f"{sec['mean']:.1f}" if sec else None, params(r), f"{r['failed']}/{r['runs']}"]
        body.append(line)
    return table(header, body, "lll" + "r" * (len(header) - 3))


def verdict_text(v: dict[str, Any] | None, task: str, majority: float | None) -> str:
    if not v:
        return f"No {task} run finished."
    name = "accuracy" if task == "classification" else "mIoU"
    text = f"**{task}: {v['winner']} wins** with val {name} {v['mean']:.3f} ± {v['std']:.3f}"
    if v["runner_up"]:
        text += f", {v['margin_points']:.1f} points above {v['runner_up']}"
        if v["within_noise"]:
            text += " (within one standard deviation over seeds: not a clear win)"
    if v["gain_over_random_same_strategy_points"] is not None:
        text += (
            f"; pretrained beats its random-init control by "
            f"{v['gain_over_random_same_strategy_points']:.1f} points "
            f"({v['gain_over_best_random_points']:.1f} over the best random-init run)"
        )
    if majority is not None:
        text += f"; always answering the majority class scores {majority:.3f}"
    return text + "."


def report(rows: list[dict[str, Any]], settings: dict[str, Any], majority: float | None) -> str:
    parts = []
    for task in settings:
        s = settings[task]
        parts.append(
            f"**{task}** ({MODELS[task]}; {s['n_train']} train / {s['n_val']} val images at "
            f"{s['image_size']} px, {s['epochs']} epochs, batch {s['batch_size']}, AdamW, "
            f"seeds {', '.join(map(str, s['seeds']))}; metric of the final epoch)"
        )
        parts.append(task_table(rows, task))
        parts.append(
            verdict_text(verdict(rows, task), task, majority if task == "classification" else None)
        )
        notes = {r["weights_note"] for r in rows if r["task"] == task and r.get("weights_note")}
        for note in notes:
            parts.append(f"Warning: pretrained weights did not fully load ({note}).")
    return "\n\n".join(parts) + "\n"


def plot(rows: list[dict[str, Any]], tasks: list[str], path: Path, majority: float | None) -> None:
    """Metric per strategy, pretrained vs random, error bars = std over seeds;
    a dashed line at the majority-class accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        strategies = list(dict.fromkeys(r["strategy"] for r in rows if r["task"] == task))
        width = 0.38
        for k, init in enumerate(INITS):
            means, stds = [], []
            for strategy in strategies:
                row = next(
                    (
                        r
                        for r in rows
                        if (r["task"], r["strategy"], r["init"]) == (task, strategy, init)
                    ),
                    None,
                )
                metric = (row or {}).get("metric")
                means.append(metric["mean"] if metric else 0.0)
                stds.append(metric["std"] if metric else 0.0)
            xs = [i + (k - 0.5) * width for i in range(len(strategies))]
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=init)
        if task == "classification" and majority is not None:
            ax.axhline(majority, color="grey", linestyle="--", linewidth=1, label="majority class")
        ax.set_xticks(range(len(strategies)), strategies, rotation=20)
        ax.set_ylabel("val accuracy" if task == "classification" else "val mIoU")
        ax.set_title(f"{task}: MobileNetV2, pretrained vs random")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def update_doc(doc: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace what lies between the markers of ``doc`` with ``text``."""
    content = doc.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"'{doc}' lacks the markers {begin} ... {end}")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{text}{end}{tail}")


def main() -> int:
    parser = realdata.benchmark_parser(
        __doc__, "bench-strategies", "tiny data, 2 epochs, one seed: checks the plumbing"
    )
    parser.add_argument("--only", choices=tuple(FULL), help="one task only")
    parser.add_argument("--strategies", help="comma list: only these strategies")
    parser.add_argument("--seeds", help="comma list of seeds instead of the default")
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs at a time (default 2: one per core)"
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    parser.add_argument("--plot", type=Path, help="write the bar chart to this PNG")
    parser.add_argument(
        "--doc", type=Path, help="rewrite the tables between the markers of this file"
    )
    opts = parser.parse_args()

    settings = json.loads(json.dumps(QUICK if opts.quick else FULL))
    if opts.only:
        settings = {opts.only: settings[opts.only]}
    if opts.seeds:
        for s in settings.values():
            s["seeds"] = [int(x) for x in opts.seeds.split(",")]
    arms = {"classification": CLASSIFICATION_ARMS, "segmentation": SEGMENTATION_ARMS}
    wanted = set(opts.strategies.split(",")) if opts.strategies else None

    weights = realdata.mobilenet_weights()
    folders = prepare_data(settings, opts.work)
    jobs = []
    for task, s in settings.items():
        chosen = tuple(a for a in arms[task] if wanted is None or a.strategy in wanted)
        jobs += jobs_for(chosen, s, folders[task], opts.out, weights)
    print(f"{len(jobs)} runs, {opts.jobs} at a time, {opts.threads} thread(s) each", flush=True)
    start = time.perf_counter()
    run_all(jobs, opts.jobs, opts.threads)
    total = time.perf_counter() - start

    rows = aggregate(jobs)
    majority = majority_accuracy(folders["classification"]) if "classification" in folders else None
    text = report(rows, settings, majority) + f"\nTotal wall time: {total / 60:.1f} min.\n"
    print("\n" + text)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "tables.md").write_text(text)
    results = {
        "settings": settings,
        "quick": opts.quick,
        "data": {task: str(path) for task, path in folders.items()},
        "weights": str(weights),
        "majority_accuracy": majority,
        "threads": opts.threads,
        "jobs": opts.jobs,
        "total_wall_seconds": round(total, 1),
        "verdicts": {task: verdict(rows, task) for task in settings},
        "rows": rows,
        "runs": [
            {
                "task": j.arm.task,
                "strategy": j.arm.strategy,
                "init": j.init,
                "seed": j.seed,
                "run_dir": str(j.run_dir),
                "arm": asdict(j.arm),
                **j.result,
            }
            for j in jobs
        ],
    }
    (opts.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if opts.plot:
        plot(rows, list(settings), opts.plot, majority)
        print(f"plot: {opts.plot}")
    if opts.doc:
        update_doc(opts.doc, text)
        print(f"tables written into {opts.doc}")
    return 1 if any(j.result.get("exit_code") != 0 for j in jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
