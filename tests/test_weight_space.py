"""What a fine-tune changed (issue 13): the run keeps its starting weights,
every epoch's record says how far each group moved, and ``ftkit diff``
reports it per group and per tensor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import one_line_error, read_jsonl

from ftkit.engine.train.drift import relative_change

TINY = ["--image-size", "32", "--num-samples", "16", "--batch-size", "4", "--epochs", "2"]
SEG = ["--model", "smp:unet:tu-mobilenetv3_small_050"]


def test_relative_change_by_hand():
    start = {"a": torch.tensor([3.0, 4.0]), "b": torch.zeros(2)}
    now = {"a": torch.tensor([3.0, 5.0]), "b": torch.zeros(2)}
    assert relative_change(start, now, ["a"]) == pytest.approx(1 / 5)  # ||(0,1)|| / ||(3,4)||
    assert relative_change(start, now, ["b"]) == 0.0
    now["b"] = torch.ones(2)
    assert math.isnan(relative_change(start, now, ["b"]))  # moved away from all zeros
    assert relative_change(start, now, ["a", "b"]) == pytest.approx(math.sqrt(3) / 5)


@pytest.fixture(scope="module")
def freeze_run(tmp_path_factory):
    import os
    import subprocess
    import sys

    where = tmp_path_factory.mktemp("freeze")
    args = ["run", *SEG, *TINY, "--strategy", "freeze", "--out", "run"]
    done = subprocess.run(
        [sys.executable, "-m", "ftkit", *args], cwd=where, capture_output=True, text=True,
        env=os.environ,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return where / "run"


def test_the_run_keeps_its_start_and_records_how_far_each_group_moved(ftkit, freeze_run):
    assert (freeze_run / "checkpoints" / "start.safetensors").is_file()
    report = json.loads(ftkit("diff", str(freeze_run), "--json").stdout)
    parts = {g["name"]: g["part"] for g in report["groups"]}
    for record in read_jsonl(freeze_run / "metrics.jsonl"):
        change = record["weight_change"]
        assert set(change) == set(parts)  # every anatomy group, frozen ones too
        for group, value in change.items():  # freeze: the backbone stays where it started
            assert (value == 0.0) if parts[group] == "backbone" else (value > 0), group


def test_diff_after_freeze_is_exactly_zero_on_the_backbone(ftkit, freeze_run, tmp_path):
    result = ftkit("diff", str(freeze_run), "--json", "--plot", "moved.png")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    backbone = [g for g in report["groups"] if g["part"] == "backbone"]
    head = [g for g in report["groups"] if g["part"] == "head"]
    assert backbone and head
    for group in backbone:
        assert group["relative_change"] == 0.0
        assert set(group["tensors"].values()) == {0.0}
    assert all(g["relative_change"] > 0 for g in head)
    assert (tmp_path / "moved.png").stat().st_size > 0
    text = ftkit("diff", str(freeze_run))
    assert text.returncode == 0 and "0 (unchanged)" in text.stdout


def test_diff_against_itself_is_zero(ftkit, freeze_run):
    best = freeze_run / "checkpoints" / "best.safetensors"
    report = json.loads(ftkit("diff", str(freeze_run), "--against", str(best), "--json").stdout)
    assert {g["relative_change"] for g in report["groups"]} == {0.0}


@pytest.mark.parametrize(
    "args, expected",
    [
        (["nowhere"], "'nowhere' is not an ftkit run directory"),
        (["RUN", "--plot", "x.txt"], "--plot 'x.txt': unknown file type '.txt'"),
        (
            ["RUN", "--against", "missing.safetensors"],
            "weights file 'missing.safetensors' not found",
        ),
    ],
)
def test_diff_refuses_what_it_cannot_use(ftkit, freeze_run, args, expected):
    args = [str(freeze_run) if a == "RUN" else a for a in args]
    assert expected in one_line_error(ftkit("diff", *args))


@pytest.fixture(scope="module")
def switched_run(freeze_run):
    """A fine-tune from the freeze run (--from): its head did not start new."""
    import os
    import subprocess
    import sys

    args = [
        "run",
        *SEG,
        *TINY,
        "--from",
        str(freeze_run),
        "--strategy",
        "full",
        "--out",
        "switched",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "ftkit", *args], cwd=freeze_run.parent, capture_output=True,
        text=True, env=os.environ,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return freeze_run.parent / "switched"


def test_interpolation_at_0_and_1_is_the_start_and_the_fine_tune(ftkit, switched_run, tmp_path):
    run = switched_run
    result = ftkit("interpolate", str(run), "--alpha", "0,0.5,1", "--json", "--plot", "w.png")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backbone_only"] is False and report["note"] is None
    rows = {row["alpha"]: row for row in report["rows"]}
    start = run / "checkpoints" / "start.safetensors"
    for alpha, checkpoint in ((0.0, start), (1.0, run)):
        scored = json.loads(ftkit("eval", "--checkpoint", str(checkpoint), "--json").stdout)
        for key in ("val_miou", "val_loss", "val_iou_per_class"):
            assert rows[alpha][key] == scored[key], (alpha, key)
    assert report == json.loads((run / "interpolate.json").read_text())
    weights = run / "checkpoints" / Path(report["weights"]).name
    assert weights.is_file()  # alpha 1 is the fine-tune itself: no copy of it is written
    assert (weights.name == "best.safetensors") == (report["best_alpha"] == 1)
    assert (tmp_path / "w.png").stat().st_size > 0
    text = ftkit("interpolate", str(run), "--alpha", "0,1", "--backbone-only")
    assert text.returncode == 0 and "backbone only, head fine-tuned" in text.stdout


def test_a_new_head_is_never_mixed(ftkit, freeze_run):
    report = json.loads(ftkit("interpolate", str(freeze_run), "--alpha", "0,1", "--json").stdout)
    assert report["backbone_only"] is True
    assert report["note"] == "the run's head started new (random): only the backbone is mixed"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["RUN", "--alpha", "0,2"], "--alpha expects a comma list of numbers in [0, 1], got '0,2'"),
        (["nowhere"], "'nowhere' is not an ftkit run directory"),
    ],
)
def test_interpolate_refuses_what_it_cannot_use(ftkit, freeze_run, args, expected):
    args = [str(freeze_run) if a == "RUN" else a for a in args]
    assert expected in one_line_error(ftkit("interpolate", *args))


def test_a_soup_of_one_run_is_that_run(ftkit, freeze_run, tmp_path):
    from safetensors.torch import load_file

    result = ftkit("soup", str(freeze_run), "--out", "one.safetensors", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    soup = load_file(str(tmp_path / "one.safetensors"))
    tuned = load_file(str(freeze_run / "checkpoints" / "best.safetensors"))
    assert soup.keys() == tuned.keys() and all(torch.equal(soup[k], tuned[k]) for k in soup)
    scored = json.loads(ftkit("eval", "--checkpoint", str(freeze_run), "--json").stdout)
    assert record["greedy"]["val_miou"] == record["uniform"]["val_miou"] == scored["val_miou"]
    assert record["runs"] == [
        {"run": str(freeze_run), "val_miou": scored["val_miou"], "in_soup": True}
    ]
    assert json.loads((tmp_path / "one.json").read_text()) == record


def test_a_greedy_soup_of_two_fine_tunes_of_one_start(ftkit, freeze_run):
    args = ["run", *SEG, *TINY, "--strategy", "full", "--lr", "3e-3", "--out", "other"]
    assert ftkit(*args).returncode == 0  # the same seed: the same random start
    result = ftkit("soup", str(freeze_run), "other", "--out", "two.safetensors", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    scores = [row["val_miou"] for row in record["runs"]]
    assert scores == sorted(scores, reverse=True) and record["runs"][0]["in_soup"]
    assert record["greedy"]["val_miou"] >= scores[0]  # greedy never keeps a drop
    assert "val_miou" in record["uniform"]


def test_a_soup_refuses_runs_of_different_starts(ftkit, freeze_run):
    args = ["run", *SEG, *TINY, "--strategy", "freeze", "--seed", "1", "--out", "seed1"]
    assert ftkit(*args).returncode == 0
    line = one_line_error(ftkit("soup", str(freeze_run), "seed1", "--out", "s.safetensors"))
    assert "do not share a starting point (their start weights differ" in line
    assert "exists" in one_line_error(
        ftkit("soup", str(freeze_run), "--out", str(freeze_run / "checkpoints/best.safetensors"))
    )


def test_l2sp_pulls_what_came_from_the_weights_and_decays_the_rest():
    from ftkit.config import Config
    from ftkit.plan import make_plan
    from ftkit.plan.strategy import PlanRequest
    from ftkit.plugins.manager import Plugins
    from ftkit.prepare import prepare

    config = Config(task="classification", model="tv:resnet18", num_classes=10, strategy="full")
    prepared = prepare(config, Plugins())
    anatomy, options = prepared.anatomy, {**prepared.options, "l2sp": 0.5}
    head = set(anatomy.params_of(anatomy.head))

    def plan(**request):
        return make_plan(
            prepared.strategy, anatomy, PlanRequest(1e-3, 4, options, **request), loss="ce"
        )

    (stage,) = plan(pretrained=True, new_head=True).stages
    for group in stage.groups:
        for p in group.params:
            if p in anatomy.no_decay:  # never decayed; pulled where they came from the weights
                assert group.weight_decay == 0.0 and group.l2sp == 0.5, p
            elif p in head:  # a new head: weight decay as ever
                assert (group.l2sp, group.weight_decay, group.label) == (0.0, 0.01, "all/new"), p
            else:
                assert (group.l2sp, group.weight_decay, group.label) == (0.5, 0.0, "all"), p
    (stage,) = plan(from_checkpoint=True, new_head=False).stages  # a baseline: all of it
    assert {g.l2sp for g in stage.groups} == {0.5}
    assert plan(from_checkpoint=True, new_head=False).anchored == frozenset(anatomy.sizes)
    assert any("l2sp has no effect" in w for w in plan(pretrained=False).warnings)


def test_a_strong_l2sp_keeps_the_backbone_near_its_start(ftkit, freeze_run, tmp_path):
    base = ["run", *SEG, *TINY, "--from", str(freeze_run), "--strategy", "full", "--no-guard"]
    base += ["--lr", "1e-3", "-o", "schedule=constant", "--epochs", "3", "--num-samples", "24"]
    moved = {}
    for strength in ("0", "900"):  # lr * l2sp = 0.9: each step undoes 90% of its move
        result = ftkit(*base, "-o", f"l2sp={strength}", "--out", f"l2sp-{strength}")
        assert result.returncode == 0, result.stderr
        last = read_jsonl(tmp_path / f"l2sp-{strength}" / "metrics.jsonl")[-1]
        moved[strength] = last["weight_change"]
    backbone = [g for g in moved["0"] if g.startswith("encoder")]
    assert backbone
    for group in backbone:
        assert moved["900"][group] < moved["0"][group] / 100, (group, moved)  # 2 orders


def test_ema_with_decay_0_is_the_raw_model(ftkit, tmp_path):
    result = ftkit("run", *SEG, *TINY, "--strategy", "full", "--ema", "0", "--out", "run")
    assert result.returncode == 0, result.stderr
    for record in read_jsonl(tmp_path / "run" / "metrics.jsonl"):
        assert set(record["raw"]) == {k for k in record if k.startswith("val_")}
        for key, value in record["raw"].items():
            assert record[key] == value, key


def test_a_killed_and_resumed_run_with_ema_is_bit_identical(ftkit, tmp_path):
    from test_faults import FAULTS, last, optimizer_hash, rows, tensors_hash

    (tmp_path / "faults.py").write_text(FAULTS)
    args = ["run", *SEG, *TINY, "--strategy", "full", "--ema", "0.9", "--epochs", "3"]
    args += ["--plugin", "faults"]
    assert ftkit(*args, "--out", "reference").returncode == 0
    killed = ftkit(*args, "--out", "run", env={"FAULT_KILL_AT": "epoch:2"})
    assert killed.returncode == -9
    resumed = ftkit("run", "--resume", "run")
    assert resumed.returncode == 0, resumed.stderr
    run, reference = tmp_path / "run", tmp_path / "reference"
    assert rows(run) == rows(reference)
    assert optimizer_hash(run) == optimizer_hash(reference)
    for part in ("model", "ema"):
        state = last(run)["model"] if part == "model" else last(run)["loop"]["ema"]["shadow"]
        same = (
            last(reference)["model"]
            if part == "model"
            else last(reference)["loop"]["ema"]["shadow"]
        )
        assert tensors_hash(state) == tensors_hash(same), part
    assert any(r["raw"]["val_loss"] != r["val_loss"] for r in rows(reference))  # it averages
    # best holds the average, not the raw weights (here the last epoch is the best)
    from safetensors.torch import load_file

    best = load_file(str(reference / "checkpoints" / "best.safetensors"))
    if rows(reference)[-1]["val_miou"] == max(r["val_miou"] for r in rows(reference)):
        shadow = last(reference)["loop"]["ema"]["shadow"]
        assert all(torch.equal(best[k], shadow[k]) for k in best)


def test_ema_keeps_frozen_weights_bit_identical(ftkit, tmp_path):
    args = ["run", *SEG, *TINY, "--strategy", "freeze", "--ema", "0.9", "--out", "run"]
    assert ftkit(*args).returncode == 0
    report = json.loads(ftkit("diff", "run", "--json").stdout)  # best holds the average
    for group in report["groups"]:
        assert (group["relative_change"] == 0.0) == (group["part"] == "backbone"), group["name"]


def test_diff_against_weights_of_another_shape_is_one_line(ftkit, freeze_run, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(freeze_run / "checkpoints" / "start.safetensors"))
    name = next(k for k, v in state.items() if v.ndim == 4)
    state[name] = torch.zeros(1, *state[name].shape[1:])
    save_file(state, str(tmp_path / "other.safetensors"))
    line = one_line_error(ftkit("diff", str(freeze_run), "--against", "other.safetensors"))
    assert f"'{name}' is (1, " in line and "expected weights of the same architecture" in line


def test_a_running_mean_near_zero_is_measured_against_its_spread():
    from ftkit.engine.train.drift import stat_change

    start = {"bn.running_mean": torch.full((4,), 1e-9), "bn.running_var": torch.ones(4)}
    now = {"bn.running_mean": torch.full((4,), 2e-9), "bn.running_var": torch.full((4,), 1.21)}
    # by hand: ||1e-9 * 1|| / ||sqrt(1)|| over 4 channels = 1e-9 (relative: 1.0)
    assert stat_change(start, now, "bn.running_mean") == pytest.approx(1e-9, rel=1e-6)
    assert stat_change(start, now, "bn.running_var") == pytest.approx(0.21, rel=1e-6)


def test_the_interpolation_plot_names_its_axes(tmp_path, monkeypatch):
    import matplotlib.figure

    from ftkit.commands.weight_space import plot_interpolation

    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    report = {
        "run": "/runs/switched", "monitor": "val_miou", "per_class": "val_iou_per_class",
        "class_names": ["bg", "fg"], "backbone_only": False, "best_alpha": 0.5,
        "rows": [{"alpha": a, "val_miou": a, "val_iou_per_class": [a, a]} for a in (0, 0.5, 1)],
    }  # fmt: skip
    plot_interpolation(report, str(tmp_path / "w.png"))
    ax = drawn[0].axes[0]
    assert ax.get_xlabel().startswith("alpha")
    assert ax.get_ylabel() == "val_miou and per-class val_iou_per_class"
    assert ax.get_title() == "WiSE-FT of switched (all weights)"
