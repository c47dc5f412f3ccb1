"""Which images are scored (issue 22): a split that adding files cannot move, a
test folder scored whole, a fine-tune that follows its baseline and never
validates on the baseline's training images, run directories usable from
anywhere, a temperature that cannot make a model uniform, and phantom classes
and unwritable output folders refused in one line."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_line_error
from PIL import Image

from ftkit.configure import make_config
from ftkit.data.folders import load_folder, split_key
from ftkit.errors import UsageError
from ftkit.plugins.manager import Plugins
from ftkit.prepare import prepare

SEG = ["--model", "smp:unet:mobilenet_v2", "--image-size", "32", "--batch-size", "4"]


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def seg_folder(root: Path, n: int, start: int = 0, size: int = 32) -> Path:
    """``images/`` and ``masks/``: the mask is 1 where the image is bright."""
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        bright = rng.random((size, size)) > 0.5
        png(root / "images" / f"{i:04d}.png", np.repeat(bright[..., None] * 200.0, 3, axis=2))
        png(root / "masks" / f"{i:04d}.png", bright.astype(np.uint8))
    return root


def cls_folder(root: Path, n: int, start: int = 0, classes=("a", "b")) -> Path:
    for i in range(start, start + n):
        name = classes[i % len(classes)]
        png(root / name / f"{i:05d}.png", np.full((4, 4, 3), 40 * (i % len(classes))))
    return root


def ftkit_in(cwd: Path, monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``ftkit ARGS`` in this process, from ``cwd``: exit code, stdout, stderr."""
    from ftkit.cli import main

    monkeypatch.chdir(cwd)
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def names(dataset) -> set[str]:
    return {p.name for p in dataset.source.images}


# --- the split ----------------------------------------------------------------


def test_adding_files_leaves_every_file_on_its_side(tmp_path):
    root = cls_folder(tmp_path / "d", 1000)
    before = load_folder(root, "classification", image_size=4)
    cls_folder(root, 50, start=1000)
    after = load_folder(root, "classification", image_size=4)
    old_train, old_val = names(before.train), names(before.val)
    assert len(old_train) + len(old_val) == 1000
    assert old_train <= names(after.train) and old_val <= names(after.val)
    added = (names(after.train) | names(after.val)) - old_train - old_val
    assert len(added) == 50
    assert 0.15 < len(old_val) / 1000 < 0.25  # the fraction holds (about: one draw per file)
    # stratified in expectation: each class keeps about its share of validation images
    per_class = [sum(1 for p in before.val.source.images if p.parent.name == c) for c in "ab"]
    assert all(70 < k < 130 for k in per_class), per_class


def test_val_fraction_is_an_option_recorded_with_the_run(tmp_path):
    root = seg_folder(tmp_path / "d", 40)
    config = make_config(None, (), (), {"data": str(root), "val_fraction": 0.5})
    assert "val_fraction = 0.5" in config.to_toml()
    half = load_folder(root, "segmentation", image_size=8, val_fraction=0.5)
    fifth = load_folder(root, "segmentation", image_size=8, val_fraction=0.2)
    assert names(fifth.val) < names(half.val)  # a larger fraction only adds images
    with pytest.raises(UsageError, match="between 0 and 1"):
        make_config(None, (), (), {"val_fraction": 1.0})


# --- a run and what is done with it ---------------------------------------------


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, mobilenet_file):
    """A one-epoch U-Net run on 20 images, trained from a copy of the ImageNet file
    that is deleted afterwards, as a user's moved or cleaned-up download would be."""
    import subprocess
    import sys

    where = tmp_path_factory.mktemp("baseline")
    data = seg_folder(where / "data", 20)
    weights = where / "mnv2.pth"
    shutil.copy(mobilenet_file, weights)
    done = subprocess.run(
        [sys.executable, "-m", "ftkit", "run", *SEG, "--data", "data", "--weights", "mnv2.pth",
         "--strategy", "full", "--epochs", "1", "--out", "run"],
        cwd=where, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    weights.unlink()
    return where / "run", data


def test_config_toml_names_the_files_absolutely(baseline):
    run, data = baseline
    saved = (run / "config.toml").read_text()
    assert f'data = "{data}"' in saved
    assert f'weights = "{data.parent / "mnv2.pth"}"' in saved


def test_eval_scores_a_test_folder_whole(baseline, tmp_path, monkeypatch, capsys):
    run, _ = baseline
    test = seg_folder(tmp_path / "test", 30, start=500)
    code, out, err = ftkit_in(
        tmp_path, monkeypatch, capsys, "eval", "--checkpoint", str(run), "--data", "test", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert (report["split"], report["samples"]) == ("all", 30)
    assert report["data"] == str(test)
    code, out, err = ftkit_in(
        tmp_path, monkeypatch, capsys, "eval", "--checkpoint", str(run), "--data", "test",
        "--split", "val", "--json",
    )  # fmt: skip
    assert code == 0, err
    val = json.loads(out)
    assert val["split"] == "val" and 0 < val["samples"] < 30
    # its own data: the validation split, as training scored it
    code, out, err = ftkit_in(tmp_path, monkeypatch, capsys, "eval", "--checkpoint", str(run))
    assert code == 0, err
    lines = out.splitlines()
    assert f"{'split':>16}  val" in lines
    own = load_folder(baseline[1], "segmentation", image_size=32)
    assert f"{'samples':>16}  {len(own.val)}" in lines


def test_a_test_folder_with_train_and_val_is_scored_on_val(baseline, tmp_path, monkeypatch, capsys):
    run, _ = baseline
    seg_folder(tmp_path / "t" / "train", 4)
    seg_folder(tmp_path / "t" / "val", 7, start=100)
    code, out, err = ftkit_in(
        tmp_path, monkeypatch, capsys, "eval", "--checkpoint", str(run), "--data", "t", "--json"
    )
    assert code == 0, err
    assert (json.loads(out)["split"], json.loads(out)["samples"]) == ("val", 7)
    code, out, err = ftkit_in(
        tmp_path, monkeypatch, capsys, "eval", "--checkpoint", str(run), "--data", "t",
        "--split", "all", "--json",
    )  # fmt: skip
    assert json.loads(out)["samples"] == 11


def test_commands_on_a_run_work_from_elsewhere_without_the_weights_file(
    baseline, tmp_path, monkeypatch, capsys
):
    assert not (baseline[0].parent / "mnv2.pth").exists()
    run = tmp_path / "run"  # a copy: interpolate writes its result into the run
    shutil.copytree(baseline[0], run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args in (
        ["eval", "--checkpoint", str(run)],
        ["diff", str(run)],
        ["interpolate", str(run), "--alpha", "0,1"],
        ["soup", str(run), str(run), "--out", str(tmp_path / "soup.safetensors")],
    ):
        code, _, err = ftkit_in(elsewhere, monkeypatch, capsys, *args)
        assert code == 0, (args, err)
        assert "not found" not in err


def test_a_fine_tune_follows_its_baseline_and_never_validates_on_its_training_images(
    baseline, tmp_path, monkeypatch, capsys
):
    run, data = baseline
    plugins = Plugins(())
    base = prepare(make_config(str(run / "config.toml"), (), (), {}), plugins, load_weights=False)
    trained_on = names(base.data.train)
    seg_folder(data, 12, start=200)  # the folder grows after the baseline
    try:
        # neither --model nor --data given: both come from the baseline
        config = make_config(None, (), (), {"start_from": str(run), "strategy": "loss-switch"})
        assert (config.model, config.data, config.image_size) == (
            "smp:unet:mobilenet_v2", str(data), 32,
        )  # fmt: skip
        fine = prepare(config, plugins)
        assert not names(fine.data.val) & trained_on
        # the added files that drew validation train instead, and are named
        assert names(fine.data.val) == names(base.data.val)
        added = {f"{i:04d}.png" for i in range(200, 212)}
        assert names(fine.data.train) == trained_on | added
        drew_val = sorted(
            f"images/{n}" for n in added if split_key(data / "images" / n, data) < 0.2
        )
        assert drew_val  # this folder's names do draw some (else the case tests nothing)
        held = [w for w in fine.plan.warnings if "added since the --from run" in w]
        assert held == [
            f"{len(drew_val)} file(s) added since the --from run would have been validation "
            f"images: {', '.join(drew_val[:3])}"
            + (f" and {len(drew_val) - 3} more" if len(drew_val) > 3 else "")
            + "; they train, and validation stays the baseline's"
        ]
        record = json.loads((run / "split.json").read_text())
        assert set(record["val"]) == {f"images/{n}" for n in names(base.data.val)}
        assert record["val_fraction"] == 0.2
        # eval of the baseline on its grown folder: its own validation files, and said so
        code, out, err = ftkit_in(
            tmp_path, monkeypatch, capsys, "eval", "--checkpoint", str(run), "--json"
        )
        assert code == 0, err
        assert json.loads(out)["samples"] == len(base.data.val)
        assert f"scored on the run's own {len(base.data.val)} validation files, not on the " in err
        assert not [w for w in fine.plan.warnings if "differs from the --from run" in w]
        # a given option that differs is named among the plan's warnings
        other = seg_folder(data.parent / "other", 6, start=300)
        moved = prepare(
            make_config(None, (), (), {"start_from": str(run), "data": str(other)}), plugins
        )
        assert f"--data {other} differs from the --from run's {data}" in moved.plan.warnings
        with pytest.raises(UsageError, match="--val-fraction 0.5 differs from the --from run's"):
            make_config(None, (), (), {"start_from": str(run), "val_fraction": 0.5})
    finally:
        for i in range(200, 212):
            (data / "images" / f"{i:04d}.png").unlink()
            (data / "masks" / f"{i:04d}.png").unlink()


# --- calibration that cannot lie ------------------------------------------------


def test_a_temperature_for_noise_is_bounded_warned_and_not_stored(tmp_path):
    from ftkit.commands.calibration import T_RANGE, fit_temperature
    from ftkit.commands.evaluate import CALIBRATION, _temperature

    generator = torch.Generator().manual_seed(0)
    logits = 5 * torch.randn(300, 3, generator=generator)  # confident, and unrelated to...
    target = torch.randint(0, 3, (300,), generator=generator)  # ...the labels
    temperature = fit_temperature(logits, target)
    assert temperature == T_RANGE[1]  # unbounded, it runs off towards infinity
    notes: list[str] = []
    found = _temperature("w.safetensors", "sha", tmp_path, logits, target, "none", True, notes)
    assert found["temperature"] == T_RANGE[1]
    assert any("at the bound" in n for n in found["calibration_refused"])
    assert any(n.startswith("warning:") and "not stored" in n for n in notes)
    assert not (tmp_path / CALIBRATION).exists()
    assert found["nll_calibrated"] > math.log(3) - 0.01  # what T would have "fixed"


# --- refused in one line --------------------------------------------------------


def test_more_classes_than_classes_txt_is_one_line(ftkit, tmp_path):
    root = seg_folder(tmp_path / "d", 6)
    (root / "classes.txt").write_text("background\nbright\nother\n")
    line = one_line_error(ftkit("plan", *SEG, "--data", "d", "--num-classes", "5"))
    assert "--num-classes 5 is more than the 3 classes listed in" in line
    assert "class(es) 3, 4" in line
    folder = cls_folder(tmp_path / "c", 6, classes=("x", "y", "z"))
    with pytest.raises(UsageError, match="no image holds class\\(es\\) 3, 4"):
        load_folder(folder, "classification", image_size=4, num_classes=5)
    with pytest.raises(UsageError, match="more than the 2 classes that the masks"):
        load_folder(seg_folder(tmp_path / "m", 6), "segmentation", image_size=8, num_classes=3)


def test_an_unwritable_out_is_one_line_before_any_model(ftkit, tmp_path):
    result = ftkit("run", "--out", "/sys/ftkit-run", "--model", "smp:unet:resnet1800")
    line = one_line_error(result)  # the unknown encoder would have been the error after
    assert "--out '/sys/ftkit-run': cannot create a folder in '/sys'" in line


# --- friction -------------------------------------------------------------------


def test_strategy_name_beside_its_table_is_accepted(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('strategy = "two-stage"\nlr = 1e-5\n\n[strategy]\nlr_scale = 0.3\n')
    config = make_config(str(path), (), (), {})
    assert (config.strategy, config.strategy_options, config.lr) == (
        "two-stage", {"lr_scale": 0.3}, 1e-5,
    )  # fmt: skip
    path.write_text('strategy = "full"\n[strategy]\nname = "freeze"\n')
    with pytest.raises(UsageError, match="not valid TOML: strategy = 'full' at the top"):
        make_config(str(path), (), (), {})


def test_plan_prints_a_data_summary(tmp_path, monkeypatch, capsys):
    cls_folder(tmp_path / "d", 30, classes=("cat", "dog", "owl"))
    code, out, err = ftkit_in(
        tmp_path, monkeypatch, capsys, "plan", "--task", "classification", "--model",
        "tv:mobilenet_v2", "--data", "d", "--image-size", "32", "--strategy", "full",
    )  # fmt: skip
    assert code == 0, err
    line = next(x.strip() for x in out.splitlines() if x.strip().startswith("data:"))
    train = load_folder(tmp_path / "d", "classification", image_size=4)
    counts = [
        sum(p.parent.name == c for p in train.train.source.images) for c in ("cat", "dog", "owl")
    ]
    assert line == (
        f"data: {len(train.train)} train, {len(train.val)} val samples, 3 classes "
        f"(train cat {counts[0]}, dog {counts[1]}, owl {counts[2]}); "
        "split by path hash, val fraction 0.2"
    )
