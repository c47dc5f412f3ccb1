"""Run the loss-switch story of docs/loss-switch.md on builtin:shapes and check it.

    python tools/loss_switch_story.py              # four runs under ./story/
    python tools/loss_switch_story.py OUT --force  # into OUT, replacing an earlier story

Four ``ftkit run`` commands, run as a user would run them (subprocesses of the
real CLI), on the CPU in a few minutes:

1. ``baseline``: trained with plain cross-entropy until it stops improving;
2. ``loss-switch``: ``--strategy loss-switch --from`` the baseline (ce+dice with
   automatic class weights; head first, then backbone and head) at seed
   004's ``--lr 1e-5``;
3. ``lr-too-high``: the same at an LR 100x higher, which the baseline guard
   must stop (exit code 3, diagnosis lr-too-high);
4. ``lr-too-low``: the same at ``--lr 1e-9`` (diagnosis lr-too-low, exit code 0).

Then it checks every expected outcome, prints the figures as markdown tables
(those pasted into docs/loss-switch.md), writes them to ``OUT/figures.md`` and
``OUT/figures.json``, and exits 1 if any check failed. Each run's output is in
``OUT/NAME.log``, its run directory in ``OUT/NAME/``.

The four runs share model, data, seed and thread count, so every figure but
the wall times comes out the same each time the script runs.
"""

from __future__ import annotations

import argparse
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

# The same model and data for all four runs: an FPN on a small MobileNetV3
# learns shapes in ten epochs of a few seconds each on one CPU thread and,
# predicting at a quarter of the resolution, leaves the rare star room to improve.
COMMON = shlex.split(
    "--task segmentation --data builtin:shapes --image-size 64 --num-samples 384 "
    "--model smp:fpn:tu-mobilenetv3_small_050 --batch-size 8 --seed 0 --device cpu"
)
BASELINE = shlex.split("--strategy full --loss ce --lr 3e-3 --epochs 10")
# Three epochs of head only, then three of backbone + head. The strategy keeps
# every BatchNorm's running statistics those of the baseline (bn_mode=frozen):
# re-estimated from batches of 8 they would move mIoU by more than the guard's
# "barely moved" (0.2 points) at any LR. The guard reads the first 5 epochs.
SWITCH = shlex.split("--strategy loss-switch --epochs 6 -o stage1_epochs=3")
SWITCH_LR = 1e-5  # seed 004's --lr: head 3e-6, then backbone 1.5e-7 and head 6e-7
MAX_MIOU_DROP = 0.005  # half a point of mIoU
FILES = ("figures.md", "figures.json")


@dataclass(frozen=True)
class Story:
    name: str
    args: list[str]
    exit_code: int
    stop_reason: str
    diagnosis: str | None  # None: no --from, so no guard


def stories(out: Path) -> list[Story]:
    def switch(lr: float) -> list[str]:
        return [*SWITCH, "--lr", fmt_lr(lr), "--from", str(out / "baseline")]

    return [
        Story("baseline", BASELINE, 0, "completed", None),
        Story("loss-switch", switch(SWITCH_LR), 0, "completed", "healthy"),
        Story("lr-too-high", switch(SWITCH_LR * 100), 3, "baseline-guard", "lr-too-high"),
        Story("lr-too-low", switch(1e-9), 0, "completed", "lr-too-low"),
    ]


def ftkit_command() -> list[str]:
    """The ``ftkit`` beside this interpreter (a venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("ftkit")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("ftkit")
    return [found] if found else [sys.executable, "-m", "ftkit"]


def prepare_out(out: Path, force: bool, names: list[str]) -> None:
    if out.exists() and not out.is_dir():
        sys.exit(f"loss_switch_story: '{out}' exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            sys.exit(f"loss_switch_story: '{out}' is not empty; use --force to replace the story")
        # Remove only what this script writes: never anything else in the folder.
        for name in names:
            shutil.rmtree(out / name, ignore_errors=True)
            (out / f"{name}.log").unlink(missing_ok=True)
        for name in FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def run(story: Story, out: Path, ftkit: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One ``ftkit run``, its output in OUT/NAME.log; what its run directory says."""
    run_dir = out / story.name
    args = ["run", *COMMON, *story.args, "--out", str(run_dir)]
    command = shlex.join(["ftkit", *args])
    print(f"\n$ {command}", flush=True)
    log = out / f"{story.name}.log"
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([*ftkit, *args], stdout=fh, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - start
    summary = read_json(run_dir / "summary.json") or {}
    plan = read_json(run_dir / "plan.json") or {"stages": []}
    metrics = run_dir / "metrics.jsonl"
    records = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.exists() else []
    result = {
        "name": story.name,
        "command": command,
        "exit_code": proc.returncode,
        "stop_reason": summary.get("stop_reason"),
        "diagnosis": summary.get("diagnosis"),
        "diagnosis_message": summary.get("diagnosis_message"),
        "epochs_run": summary.get("epochs_run"),
        "wall_seconds": round(seconds, 1),
        # The LR of each group per stage (a group's no_decay half has the same LR).
        "stages": [
            {
                "name": stage["name"],
                "epochs": stage["epochs"],
                "lr": {g["name"]: g["lr"] for g in stage["groups"] if "/" not in g["name"]},
            }
            for stage in plan["stages"]
        ],
        "miou_per_epoch": [round(r["val_miou"], 4) for r in records],  # epoch 0: the baseline
        "summary": summary,
    }
    print(
        f"exit code {proc.returncode}, {result['stop_reason']}, "
        f"diagnosis {result['diagnosis'] or '-'}, {seconds:.0f} s; output in {log}",
        flush=True,
    )
    return result


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def check(plan: list[Story], runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every outcome the story promises, as (check, ok, got)."""
    checks = []
    for story in plan:
        result = runs.get(story.name, {})
        for key in ("exit_code", "stop_reason", "diagnosis"):
            want, got = getattr(story, key), result.get(key, "not run")
            name = f"{story.name}: {key.replace('_', ' ')} {want if want is not None else '-'}"
            checks.append({"check": name, "ok": got == want, "got": got})
    comparison = compare(runs)
    if not comparison:
        checks.append({"check": "loss-switch: baseline and final", "ok": False, "got": "none"})
        return checks
    rarest = comparison["rarest"]
    i = comparison["class_names"].index(rarest)
    before, after = comparison["baseline"], comparison["loss_switch"]
    drop = before["miou"] - after["miou"]
    checks += [
        {
            "check": f"loss-switch: IoU of the rarest class ({rarest}) above the baseline's",
            "ok": after["iou"][i] > before["iou"][i],
            "got": f"{before['iou'][i]:.4f} -> {after['iou'][i]:.4f}",
        },
        {
            "check": f"loss-switch: mIoU drop at most {MAX_MIOU_DROP * 100:g} points",
            "ok": drop <= MAX_MIOU_DROP,
            "got": f"{before['miou']:.4f} -> {after['miou']:.4f} ({-drop * 100:+.2f} points)",
        },
    ]
    return checks


def compare(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The baseline (the loss-switch run's epoch 0) against the loss-switch's final weights."""
    summary = runs.get("loss-switch", {}).get("summary", {})
    if not (summary.get("baseline") and summary.get("final")):
        return {}
    names, counts = summary["class_names"], summary["label_counts"]
    before, after = summary["baseline"], summary["final"]
    return {
        "class_names": names,
        "label_counts": counts,
        "rarest": names[counts.index(min(counts))],
        "baseline": {"miou": before["val_miou"], "iou": before["val_iou_per_class"]},
        "loss_switch": {"miou": after["val_miou"], "iou": after["val_iou_per_class"]},
    }


def table(header: list[str], rows: list[list[Any]], align: str) -> str:
    """A markdown table; ``align`` holds l or r per column."""
    rule = [":---" if a == "l" else "---:" for a in align]
    lines = [header, rule, *([cell(c) for c in row] for row in rows)]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def cell(value: Any) -> str:
    return "-" if value is None else str(value)


def fmt_lr(lr: float) -> str:
    """3e-05 as 3e-5, 0.003 as 3e-3: the way ftkit prints LRs."""
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def points(value: float) -> str:
    return f"{value * 100:+.2f}"


def figures(runs: dict[str, dict[str, Any]], checks: list[dict[str, Any]], total: float) -> str:
    """The markdown printed at the end and pasted into docs/loss-switch.md."""
    parts = []
    comparison = compare(runs)
    if comparison:
        before, after = comparison["baseline"], comparison["loss_switch"]
        rows = [["mIoU", before["miou"], after["miou"]]]
        for i, name in enumerate(comparison["class_names"]):
            rarest = " (rarest)" if name == comparison["rarest"] else ""
            rows.append([f"IoU {name}{rarest}", before["iou"][i], after["iou"][i]])
        rows = [[label, f"{b:.4f}", f"{a:.4f}", points(a - b)] for label, b, a in rows]
        header = ["", "baseline", "loss-switch (final)", "change (points)"]
        parts.append(table(header, rows, "lrrr"))

    rows = []
    for r in runs.values():
        lrs = "; ".join(
            ", ".join(f"{group} {fmt_lr(lr)}" for group, lr in stage["lr"].items())
            for stage in r["stages"]
        )
        rows.append(
            [
                r["name"],
                lrs,
                r["exit_code"],
                r["stop_reason"],
                r["diagnosis"],
                r["epochs_run"],
                f"{r['wall_seconds']:.0f} s",
            ]
        )
    header = [
        "run",
        "LRs (stage 1; stage 2)",
        "exit code",
        "stop reason",
        "diagnosis",
        "epochs",
        "wall time",
    ]
    parts.append(table(header, rows, "llrllrr"))

    switches = [r for r in runs.values() if r["name"] != "baseline" and r["miou_per_epoch"]]
    if switches:
        width = max(len(r["miou_per_epoch"]) for r in switches)
        rows = [
            [r["name"], *(f"{m:.4f}" for m in r["miou_per_epoch"])]
            + [""] * (width - len(r["miou_per_epoch"]))
            for r in switches
        ]
        header = ["mIoU at epoch", *map(str, range(width))]
        parts.append(table(header, rows, "l" + "r" * width))

    rows = [["yes" if c["ok"] else "**NO**", c["check"], c["got"]] for c in checks]
    parts.append(table(["ok", "check", "got"], rows, "lll"))
    parts.append(f"Total wall time: {total:.0f} s.")
    return "\n\n".join(parts) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "out",
        nargs="?",
        default=Path("story"),
        type=Path,
        help="folder for the runs and figures (default: story)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace the story in a folder that holds one"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads per run (default 1; the figures depend on it through "
        "the order of floating-point sums)",
    )
    opts = parser.parse_args()
    plan = stories(opts.out)
    prepare_out(opts.out, opts.force, [s.name for s in plan])
    threads = str(opts.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    ftkit = ftkit_command()

    start = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {}
    for story in plan:
        runs[story.name] = run(story, opts.out, ftkit, env)
        if story.name == "baseline" and runs[story.name]["exit_code"] != 0:
            break  # nothing to start from
    total = time.perf_counter() - start

    checks = check(plan, runs)
    text = figures(runs, checks, total)
    print("\n" + text, end="")
    (opts.out / "figures.md").write_text(text)
    data = {
        "settings": {
            "common": COMMON,
            "baseline": BASELINE,
            "loss_switch": SWITCH,
            "loss_switch_lr": SWITCH_LR,
            "threads": opts.threads,
        },
        "runs": list(runs.values()),
        "comparison": compare(runs),
        "checks": checks,
        "ok": all(c["ok"] for c in checks),
        "total_wall_seconds": round(total, 1),
    }
    (opts.out / "figures.json").write_text(json.dumps(data, indent=2) + "\n")
    failed = [c["check"] for c in checks if not c["ok"]]
    for name in failed:
        print(f"loss_switch_story: check failed: {name}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
