"""Everyday defects of issue 16: options that were silently ignored, checks that plan
skipped, values and paths refused too late, and output that misled."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import one_line_error
from segmentation_models_pytorch.losses import DiceLoss, TverskyLoss

from ftkit.config import Config, build_config, load_file, option_fields
from ftkit.engine.stoppers import EarlyStopping
from ftkit.engine.summary import rare_classes
from ftkit.engine.train.guards import GradNormAlert
from ftkit.errors import UsageError
from ftkit.losses import build_loss

SMALL = ["--image-size", "32", "--num-samples", "16", "--strategy", "full"]
TINY = [*SMALL, "--batch-size", "4", "--epochs", "1"]
SEG = {"task": "segmentation", "num_classes": 3, "ignore_index": 255}


def strict_json(text: str) -> object:
    """json.loads that refuses the bare NaN / Infinity Python writes by default."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def seg_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 8, 8, generator=gen), torch.randint(0, 3, (2, 8, 8), generator=gen)


# --- 9: every loss honours an option or refuses it -----------------------------------------


@pytest.mark.parametrize(
    ("loss", "option", "flag"),
    [
        ("lovasz", ["--class-weights", "1,50,1,1,1"], "--class-weights"),
        ("lovasz", ["--label-smoothing", "0.3"], "--label-smoothing"),
        ("dice", ["--label-smoothing", "0.3"], "--label-smoothing"),
        ("tversky", ["--label-smoothing", "0.1"], "--label-smoothing"),
        ("dice+lovasz", ["--label-smoothing", "0.1"], "--label-smoothing"),
    ],
)
def test_a_loss_refuses_an_option_it_ignores(ftkit, loss, option, flag):
    line = one_line_error(ftkit("plan", *TINY, "--loss", loss, *option))
    assert flag in line and loss in line and "ce" in line


@pytest.mark.parametrize(
    ("name", "class_weights", "label_smoothing"),
    [
        ("ce", True, 0.2),
        ("dice", True, 0.0),
        ("jaccard", True, 0.0),
        ("tversky", True, 0.0),
        ("focal", True, 0.0),
    ],
)
def test_an_option_a_loss_accepts_changes_its_value(
    loss_registry, name, class_weights, label_smoothing
):
    from ftkit.losses import check_loss_spec

    logits, target = seg_batch()
    assert (
        check_loss_spec(
            name,
            loss_registry,
            task="segmentation",
            class_weights=True,
            label_smoothing=label_smoothing,
        )
        == []
    )
    plain = build_loss(name, loss_registry, **SEG)(logits, target)
    weighted = build_loss(name, loss_registry, **SEG, class_weights=[1.0, 50.0, 1.0])(
        logits, target
    )
    assert not torch.allclose(plain, weighted)
    if label_smoothing:
        smoothed = build_loss(name, loss_registry, **SEG, label_smoothing=label_smoothing)
        assert not torch.allclose(plain, smoothed(logits, target))


def test_a_sum_takes_an_option_one_term_honours_and_says_which_ignore_it(ftkit, loss_registry):
    from ftkit.losses import check_loss_spec

    notes = check_loss_spec(
        "ce+lovasz", loss_registry, task="segmentation", class_weights=True, label_smoothing=0.1
    )
    assert any("--class-weights" in n and "lovasz" in n for n in notes)
    assert any("--label-smoothing" in n and "lovasz" in n for n in notes)
    # only ce gets the weights: the sum equals weighted ce + plain lovasz
    logits, target = seg_batch()
    weights = [1.0, 50.0, 1.0]
    total = build_loss("ce+lovasz", loss_registry, **SEG, class_weights=weights)(logits, target)
    parts = build_loss("ce", loss_registry, **SEG, class_weights=weights)(logits, target)
    parts = parts + build_loss("lovasz", loss_registry, **SEG)(logits, target)
    torch.testing.assert_close(total, parts)
    result = ftkit("plan", *TINY, "--loss", "ce+lovasz", "--class-weights", "1,50,1,1,1")
    assert result.returncode == 0, result.stderr
    assert "lovasz takes no class weights" in result.stdout


def test_tversky_takes_alpha_and_beta_from_the_spec(loss_registry):
    logits, target = seg_batch()
    loss = build_loss("tversky(alpha=0.3, beta=0.7)", loss_registry, **SEG)
    expected = TverskyLoss("multiclass", ignore_index=255, alpha=0.3, beta=0.7)(logits, target)
    torch.testing.assert_close(loss(logits, target), expected)
    dice = DiceLoss("multiclass", ignore_index=255)(logits, target)
    assert not torch.allclose(loss(logits, target), dice)
    assert repr(build_loss("0.5*tversky(alpha=0.3,beta=0.7)", loss_registry, **SEG)) == (
        "0.5*tversky(alpha=0.3,beta=0.7)"
    )


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("dice(alpha=0.3)", "no parameter 'alpha'"),
        ("tversky(alpah=0.3)", "did you mean 'alpha'"),
        ("tversky(alpha=-1)", "must be >= 0"),
        ("tversky(alpha=x)", "bad parameter"),
        ("tversky(alpha=0.3", "bad term"),
    ],
)
def test_bad_loss_parameters_are_refused(loss_registry, spec, fragment):
    from ftkit.losses import check_loss_spec

    with pytest.raises(UsageError, match=fragment):
        check_loss_spec(
            spec, loss_registry, task="segmentation", class_weights=False, label_smoothing=0
        )


# --- 10: early stopping counts within a stage -----------------------------------------------


def test_patience_restarts_when_a_stage_starts():
    stopper = EarlyStopping("val_miou", patience=1)
    stopper.start_stage()
    assert stopper.update(1, {"val_miou": 0.8})
    stopper.start_stage()  # an unfreeze: the metric dips
    assert not stopper.update(2, {"val_miou": 0.5})
    assert not stopper.should_stop
    assert not stopper.update(3, {"val_miou": 0.6})  # better than the stage's start
    assert not stopper.should_stop and stopper.best == 0.8 and stopper.best_epoch == 1
    assert not stopper.update(4, {"val_miou": 0.55})
    assert stopper.should_stop


def test_gradual_unfreezing_reaches_its_last_stage_under_patience(ftkit):
    # min_delta 0.5 on mIoU: no epoch ever improves, so only restarts keep it going
    args = ["--strategy", "gradual", "-o", "every=2", "--patience", "2", "--min-delta", "0.5"]
    tiny = ["--image-size", "32", "--num-samples", "16", "--batch-size", "4", "--epochs", "6"]
    result = ftkit("run", *tiny, *args, "--out", "r")
    assert result.returncode == 0, result.stderr
    assert "completed after 6 epoch(s)" in result.stdout, result.stdout


# --- 12: every numeric option is checked against its range ------------------------------------


BAD_VALUES = [
    ("label_smoothing", 1.5),
    ("label_smoothing", 1.0),
    ("label_smoothing", -0.1),
    ("guard_tolerance", 1.0),
    ("guard_tolerance", -0.1),
    ("min_delta", -0.01),
    ("grad_norm_alert", 0.0),
    ("clip_grad_norm", 0.0),
    ("lr", 0.0),
    ("seed", -1),
    ("seed", 2**32),
    ("num_classes", 1),
    ("workers", -1),
    ("patience", 0),
    ("guard_epochs", 0),
    ("max_nonfinite_steps", 0),
    ("accumulate", 0),
    ("epochs", 0),
    ("batch_size", 0),
    ("image_size", 0),
    ("num_samples", 0),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_numeric_options_out_of_range_are_refused(name, value):
    flag = "--" + name.replace("_", "-")
    with pytest.raises(UsageError, match=f"^{flag}: must"):
        build_config({}, {name: value}, {}, ())


def test_every_numeric_option_has_a_range():
    # a new numeric option must say its range (seed and the like included)
    unchecked = [
        f.name
        for f in option_fields()
        if f.type in ("int", "float", "int | None", "float | None")
        and f.metadata.get("check") is None
    ]
    assert unchecked == []


@pytest.mark.parametrize("command", ["plan", "run"])
def test_label_smoothing_out_of_range_fails_before_the_run_directory(ftkit, tmp_path, command):
    line = one_line_error(ftkit(command, *TINY, "--label-smoothing", "1.5", "--out", "r"))
    assert "--label-smoothing" in line and "[0, 1)" in line
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


# --- 13: output paths and devices --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["plan", "--plot", "nodir/x.png"], "folder 'nodir' does not exist"),
        (["plan", "--plot", "x.pdff"], "unknown file type '.pdff'"),
        (["plan", "--plot", "FILE/x.png"], "is a file"),
        (["run", "--out", "FILE/sub"], "'FILE' is a file"),
        (["plan", "--out", "FILE/sub"], "'FILE' is a file"),
        (["data", "shapes", "FILE/sub"], "'FILE' is a file"),
        (["data", "shapes", "/proc/ftkit-shapes"], "/proc/ftkit-shapes"),
        (["run", "--device", "mps"], "--device mps"),
        (["plan", "--device", "mps"], "--device mps"),
        (["plan", "--device", "cuda:99"], "--device cuda:99"),
    ],
)
def test_unusable_outputs_and_devices_fail_before_any_work(ftkit, tmp_path, args, fragment):
    (tmp_path / "FILE").write_text("keep me\n")
    extra = TINY if args[0] in ("plan", "run") else ["--num-samples", "4", "--image-size", "16"]
    line = one_line_error(ftkit(*args, *extra))
    assert fragment in line
    assert (tmp_path / "FILE").read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


# --- 15: plan makes the checks run makes -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--num-classes", "5", "--data", "missing"], "missing"),
        (["--monitor", "val_mIoU"], "did you mean 'val_miou'"),
        (["--class-weights", "1,2"], "2 values given"),
        (["--task", "classification", "--model", "tv:resnet18", "--loss", "dice"], "dice"),
        (["--batch-size", "32"], "fewer than one step"),
    ],
)
def test_plan_refuses_what_run_refuses(ftkit, args, fragment):
    line = one_line_error(ftkit("plan", *SMALL, *args))
    assert fragment in line


# --- 16: messages ------------------------------------------------------------------------------


def test_grad_norm_alert_with_clipping_says_the_norm_is_before_clipping():
    alert = GradNormAlert(1.0, window=2, clip=0.5)
    assert alert.update(3.0) is None
    message = alert.update(3.0)
    assert message and "before clipping" in message and "--clip-grad-norm" not in message
    unclipped = GradNormAlert(1.0, window=1)
    assert "consider --clip-grad-norm" in (unclipped.update(3.0) or "")


def test_resume_diff_shows_the_default_model_not_none(tmp_path):
    from ftkit.engine.rundir.resume import open_resume

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    (tmp_path / "config.toml").write_text(Config().to_toml())
    with pytest.raises(UsageError) as info:
        open_resume(str(tmp_path), Config(model="smp:unet:resnet34"))
    assert "model: 'smp:unet:resnet18' -> 'smp:unet:resnet34'" in str(info.value)
    assert "None" not in str(info.value)


def test_a_strategy_option_at_the_top_of_a_config_points_to_the_strategy_table(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("lr_scale = 0.3\n")
    with pytest.raises(UsageError) as info:
        load_file(str(path))
    assert "[strategy]" in str(info.value) and "num_samples" not in str(info.value)
    path.write_text("batch_sise = 3\n")  # a typo still gets its suggestion
    with pytest.raises(UsageError, match="did you mean 'batch_size'"):
        load_file(str(path))


def test_a_bad_environment_variable_is_named(ftkit):
    line = one_line_error(ftkit("plan", env={"FTKIT_BATCH_SIZE": "abc"}))
    assert "FTKIT_BATCH_SIZE" in line


def test_balanced_classes_are_not_rare_and_empty_classes_are_warned():
    from ftkit.engine.summary import empty_classes

    assert rare_classes([100, 100, 100], ["a", "b", "c"]) == []
    assert rare_classes([100, 100, 10], ["a", "b", "c"]) == ["c"]
    assert empty_classes([100, 0, 5], ["a", "b", "c"]) == [
        "class 'b' has no training samples: the model cannot learn it, and its metrics "
        "will read 0 or '-'"
    ]


# --- 17: output -----------------------------------------------------------------------------


def test_a_run_with_an_empty_class_warns_and_writes_strict_json(ftkit, tmp_path):
    """One small run for several promises: a class with no training samples is
    warned about before training; with --monitor val_loss the epoch line names it
    once; metrics.jsonl, summary.json and eval --json are valid JSON (null, not NaN)."""
    args = ["run", *TINY, "--num-classes", "6", "--monitor", "val_loss", "--out", "r"]
    result = ftkit(*args, "--accumulate", "2")
    assert result.returncode == 0, result.stderr
    assert "class 'class_5' has no training samples" in result.stderr
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert epoch_lines and all(line.count("val_loss") == 1 for line in epoch_lines)
    for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines():
        strict_json(line)
    strict_json((tmp_path / "r" / "summary.json").read_text())
    evaluated = ftkit("eval", "--checkpoint", "r", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert strict_json(evaluated.stdout)["samples"] > 0


NAN_RECORD = {"epoch": 1, "train_loss": math.nan, "val_iou_per_class": [0.5, math.nan]}
NULL_RECORD = {"epoch": 1, "train_loss": None, "val_iou_per_class": [0.5, None]}


def test_metrics_rows_write_null_for_nan(tmp_path):
    from ftkit.engine.rundir.layout import append_jsonl

    append_jsonl(tmp_path / "m.jsonl", NAN_RECORD)
    assert strict_json((tmp_path / "m.jsonl").read_text()) == NULL_RECORD


def test_eval_json_writes_null_for_nan(monkeypatch):
    from click.testing import CliRunner

    import ftkit.commands.evaluate
    from ftkit.cli import cli

    monkeypatch.setattr(ftkit.commands.evaluate, "evaluate_checkpoint", lambda *a: NAN_RECORD)
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", "x.safetensors", "--json"])
    assert result.exit_code == 0, result.output
    assert strict_json(result.output) == NULL_RECORD


def test_json_text_never_writes_nan():
    from ftkit.engine.summary import json_text

    assert strict_json(json_text({"a": [math.nan, 1.0, math.inf], "b": {"c": -math.inf}})) == {
        "a": [None, 1.0, None],
        "b": {"c": None},
    }


def test_eval_help_shows_only_what_eval_uses(ftkit):
    result = ftkit("eval", "--help")
    assert result.returncode == 0
    for shown in ("--checkpoint", "--model", "--data", "--num-classes", "--device", "--config"):
        assert shown in result.stdout
    for hidden in ("--lr", "--strategy", "--patience", "--guard-tolerance", "--set", "--out"):
        assert hidden not in result.stdout


def test_progress_counts_every_batch_under_accumulation():
    from ftkit.engine.train.loop import Loop
    from ftkit.plan import Stage

    model = torch.nn.Conv2d(3, 2, 1)
    optimizer = torch.optim.SGD([{"params": model.parameters(), "lr": 0.1, "initial_lr": 0.1}])
    loop = Loop(model, optimizer, torch.device("cpu"), 3)
    stage = Stage("all", 1, (), loss="ce", bn_mode="train")
    batches = [(torch.randn(2, 3, 4, 4), torch.randint(0, 2, (2, 4, 4))) for _ in range(6)]
    seen: list[int] = []
    loss = torch.nn.functional.cross_entropy
    loop.train_epoch(batches, loss, stage, 0, 2, lambda value, n: seen.append(n))
    assert seen == [2] * 6  # the bar advances per batch and counts every image


def test_classification_panels_show_truth_and_prediction():
    from ftkit.loggers.tensorboard import panels

    run = SimpleNamespace(
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        class_names=["circle", "square", "triangle"],
        samples=[(torch.zeros(3, 16, 16), torch.tensor(1), torch.tensor(2))],
    )
    image = panels(run)
    assert image.shape == (3, 16, 48)
    truth, guess = image[:, :, 16:32], image[:, :, 32:]
    assert not torch.equal(truth, guess)  # different classes, different panels


def test_class_0_of_a_classifier_is_a_colour_not_black():
    from ftkit.loggers.tensorboard import panels

    run = SimpleNamespace(
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        class_names=["circle", "square"],
        samples=[(torch.zeros(3, 16, 16), torch.tensor(0), torch.tensor(1))],
    )
    image = panels(run)
    corner = image[:, 15, 31]  # the bottom-right pixel of the truth swatch, clear of its text
    assert corner.sum() > 0.5, corner
    assert not torch.equal(corner, image[:, 15, 47])  # class 1's swatch differs
