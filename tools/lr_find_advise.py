"""``ftkit lr-find`` and ``ftkit advise`` on real weights and real images.

    python tools/lr_find_advise.py --out choose-runs/ --doc docs/recipes.md

lr-find: ImageNet MobileNetV2 on the elpv solar cells (300/200 at 80 px, the
strategy benchmark's folder) for five strategies, and a U-Net MobileNetV2 on
the animal canvases, each swept with two shuffles; every rule's suggestion
goes through the LR lint, and a 5-epoch run at the default rule's (seed 0)
shows whether it trains. advise: the same weights on three
folders of different size and domain: elpv with 300 and with 2,000 training
images, and 6,000 animal silhouettes. About 7 minutes on a 2-core CPU;
``--quick`` checks the plumbing on tiny data. Writes ``choose.json`` and
``choose.md`` into ``--out`` and, with ``--doc``, the section between
``<!-- choose:begin/end -->`` of that file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realdata  # noqa: E402
from bench_strategies import table, update_doc  # noqa: E402

from ftkit.plan.units import fmt_lr as fmt  # noqa: E402

BEGIN, END = "<!-- choose:begin -->", "<!-- choose:end -->"
EPOCHS = 5
# (name, task, model, data key, image size, strategy, options)
SWEEPS = [
    ("full", "classification", "tv:mobilenet_v2", "elpv", 80, "full", []),
    ("freeze", "classification", "tv:mobilenet_v2", "elpv", 80, "freeze", []),
    ("two-stage", "classification", "tv:mobilenet_v2", "elpv", 80, "two-stage", []),
    ("discriminative", "classification", "tv:mobilenet_v2", "elpv", 80, "discriminative", []),
    ("llrd", "classification", "tv:mobilenet_v2", "elpv", 80, "llrd", ["-o", "decay=0.9"]),
    ("unet-full", "segmentation", "smp:unet:mobilenet_v2", "animals", 64, "full", []),
]
METRIC = {"classification": "val_macro_f1", "segmentation": "val_miou"}


def ftkit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ftkit", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr}")
    return result


def sweep_and_run(spec: tuple, values: dict[str, str], out: Path, quick: bool, env: dict) -> dict:
    name, task, model, data, size, strategy, options = spec
    common = ["--task", task, "--model", model, "--weights", values["weights"],
              "--data", values[data], "--image-size", str(size), "--batch-size", "16",
              "--device", "cpu", "--strategy", strategy, *options]  # fmt: skip
    steps = ["--steps", "20"] if quick else []
    found, again = (
        json.loads(
            ftkit("lr-find", *common, "--seed", seed, *steps, "--json", "--plot",
                  str(out / f"{name}-seed{seed}.png"), env=env).stdout
        )
        for seed in ("0", "1")  # another shuffle of the same data: how much a suggestion moves
    )  # fmt: skip
    run_dir = out / name
    if run_dir.exists():  # a previous run of this tool
        shutil.rmtree(run_dir)
    epochs = "2" if quick else str(EPOCHS)
    lr = str(found["suggested_lr"])
    ftkit("run", *common, "--seed", "0", "--lr", lr, "--epochs", epochs, "--no-guard",
          "--out", str(run_dir), env=env)  # fmt: skip
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("epoch", 0) > 0]
    metric = METRIC[task]
    return {
        "name": name,
        "task": task,
        "strategy": strategy,
        "rule": found["rule"],
        "suggestions": found["suggestions"],
        "suggestions_seed1": again["suggestions"],
        "suggested_lr": found["suggested_lr"],
        "lint": found["lint"],
        "lint_by_rule": found["lint_by_rule"],
        "lint_by_rule_seed1": again["lint_by_rule"],
        "stop": found["stop"],
        "sweep_points": len(found["lrs"]),
        "metric": metric,
        "train_loss": [round(r["train_loss"], 4) for r in rows],
        "first": rows[0][metric],
        "last": rows[-1][metric],
        "best": max(r[metric] for r in rows),
        "accuracy_last": rows[-1].get("val_accuracy"),
    }


def advise(data: Path, size: int, env: dict[str, str]) -> dict[str, Any]:
    args = ["--task", "classification", "--model", "tv:mobilenet_v2", "--weights",
            str(realdata.mobilenet_weights()), "--data", str(data), "--image-size", str(size),
            "--device", "cpu"]  # fmt: skip
    start = time.perf_counter()
    report = json.loads(ftkit("advise", *args, "--json", env=env).stdout)
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["folder"] = data.name
    return report


def report_text(sweeps: list[dict], advice: list[dict], total: float, quick: bool) -> str:
    rules = list(sweeps[0]["suggestions"])
    rows = []
    for s in sweeps:
        cells = []
        for rule in rules:
            marks = [
                fmt(s[key][rule]) + ("" if not s[lint][rule] else " ⚠")
                for key, lint in (("suggestions", "lint_by_rule"),
                                  ("suggestions_seed1", "lint_by_rule_seed1"))
            ]  # fmt: skip
            cells.append(" / ".join(marks))
        rows.append(
            [f"`{s['strategy']}`" + (" (U-Net, animals)" if s["task"] == "segmentation" else ""),
             *cells, "none" if not s["lint"] else "; ".join(s["lint"]),
             " → ".join(f"{v:.3f}" for v in (s["train_loss"][0], s["train_loss"][-1])),
             f"{s['metric'][4:]} {s['first']:.3f} → {s['last']:.3f} (best {s['best']:.3f})"]
        )  # fmt: skip
    default = sweeps[0]["rule"]
    lr_table = table(
        ["strategy", *(f"{r} (used)" if r == default else r for r in rules),
         f"LR lint at the {default} suggestion", "train loss, epoch 1 → 5",
         "validation, epoch 1 → 5"],
        rows, "l" + "r" * len(rules) + "lll",
    )  # fmt: skip
    lr_table += (
        "\n\nEach rule's suggestion from the sweep with `--seed 0` / `--seed 1` (another "
        "shuffle of the same images); ⚠: the LR lint warns at it. The runs use seed 0's."
    )

    advice_rows = []
    for a in advice:
        p = a["probe"]
        per_class = ", ".join(str(c) for c in a["label_counts"])
        chosen = a["advice"]
        words = f"`{chosen['strategy']}` {fmt(chosen['lr'])}, {chosen['epochs']} epochs"
        words += "".join(f", `-o {o}`" for o in chosen["options"])
        words += f", `--augment {chosen['augment']}`" if chosen["augment"] else ""
        alt = a["alternative"]
        advice_rows.append(
            [a["folder"], f"{a['train_images']} ({per_class})", a["size"],
             f"{p['pretrained']:.3f} / {p['random']:.3f} / {p['chance']:.3f}",
             f"{p['error_removed']:.0%} → {a['domain']}", chosen["cell"], words,
             f"`{alt['strategy']}` ({alt['cell']})" if alt else "-"]
        )  # fmt: skip
    advice_table = table(
        ["folder", "training images (per class)", "size", "probe: pretrained / random / chance",
         "error removed → domain", "cell of the guide", "advice", "close to the border: also"],
        advice_rows, "lllrllll",
    )  # fmt: skip
    mode = "--quick (tiny data: not figures)" if quick else "full"
    return (
        "### lr-find\n\n" + lr_table + "\n\n### advise\n\n" + advice_table
        + f"\n\nRun {mode} by `python tools/lr_find_advise.py`: {total / 60:.1f} min in all.\n"
    )  # fmt: skip


def main() -> int:
    parser = realdata.benchmark_parser(__doc__, "choose-runs", "tiny data: checks the plumbing")
    parser.add_argument("--doc", type=Path, help="rewrite the section of this file")
    opts = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    if opts.quick:
        elpv = realdata.elpv_folder(opts.work, 32, 32)
        animals = realdata.animal_seg_folder(opts.work, 32, 16, 64)
        folders = [(elpv, 80)]
    else:
        elpv = realdata.elpv_folder(opts.work, 300, 200)
        animals = realdata.animal_seg_folder(opts.work, 300, 100, 64)
        folders = [
            (elpv, 80),
            (realdata.elpv_folder(opts.work, 2000, 200), 80),
            (realdata.animal_cls_folder(opts.work, 6000, 1000, 64), 64),
        ]
    values = {
        "weights": str(realdata.mobilenet_weights()),
        "elpv": str(elpv),
        "animals": str(animals),
    }
    opts.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sweeps = []
    for spec in SWEEPS:
        sweeps.append(sweep_and_run(spec, values, opts.out, opts.quick, env))
        print(
            json.dumps(
                {k: sweeps[-1][k] for k in ("name", "suggestions", "lint", "first", "last")}
            ),
            flush=True,
        )
    advice = [advise(folder, size, env) for folder, size in folders]
    total = time.perf_counter() - start
    text = report_text(sweeps, advice, total, opts.quick)
    print("\n" + text)
    (opts.out / "choose.md").write_text(text)
    record = {"quick": opts.quick, "data": values, "sweeps": sweeps, "advice": advice}
    (opts.out / "choose.json").write_text(json.dumps(record, indent=1) + "\n")
    if opts.doc:
        update_doc(opts.doc, text, BEGIN, END)
        print(f"written into {opts.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
