"""Built-in losses, loss specs and class weights."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss

from ftkit.class_weights import class_weights, parse_class_weights
from ftkit.errors import UsageError
from ftkit.losses import build_loss, parse_loss

NAMES = ["ce", "dice", "focal", "lovasz", "jaccard", "tversky"]
SEG = {"task": "segmentation", "num_classes": 3, "ignore_index": 255}


def seg_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    target = torch.randint(0, 3, (2, 4, 4), generator=gen)
    target[0, 0] = 255
    return logits, target


def test_import_does_not_load_torch():
    code = "import ftkit.losses, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registers_all_builtins(loss_registry):
    assert sorted(loss_registry.names()) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_is_a_finite_scalar(loss_registry, name):
    loss = build_loss(name, loss_registry, **SEG, class_weights=[1.0, 2.0, 0.5])
    value = loss(*seg_batch())
    assert value.shape == () and torch.isfinite(value)


def test_ce_with_class_weights_matches_torch(loss_registry):
    logits, target = seg_batch()
    weights = [0.5, 2.0, 1.5]
    loss = build_loss("ce", loss_registry, **SEG, class_weights=weights, label_smoothing=0.1)
    expected = F.cross_entropy(
        logits, target, weight=torch.tensor(weights), ignore_index=255, label_smoothing=0.1
    )
    torch.testing.assert_close(loss(logits, target), expected)


def test_weighted_sum_matches_its_terms(loss_registry):
    logits, target = seg_batch()
    loss = build_loss("0.7*ce+0.3*dice", loss_registry, **SEG, class_weights=None)
    ce = F.cross_entropy(logits, target, ignore_index=255)
    dice = DiceLoss("multiclass", ignore_index=255)(logits, target)
    torch.testing.assert_close(loss(logits, target), 0.7 * ce + 0.3 * dice)
    assert repr(loss) == "0.7*ce + 0.3*dice"
    assert repr(build_loss(" ce + dice ", loss_registry, **SEG)) == "ce + dice"


def test_ignored_pixels_do_not_affect_ce(loss_registry):
    logits, target = seg_batch()
    loss = build_loss("ce", loss_registry, **SEG, class_weights=[1.0, 3.0, 1.0])
    changed = logits.clone()
    changed[0, :, 0] = 100.0  # the logits of the ignored row only
    torch.testing.assert_close(loss(changed, target), loss(logits, target))


def test_focal_works_for_classification(loss_registry):
    logits = torch.randn(5, 4)
    target = torch.tensor([0, 1, 2, 3, 1])
    kwargs = {"task": "classification", "num_classes": 4, "ignore_index": -100}
    loss = build_loss("focal+ce", loss_registry, **kwargs, class_weights=[1.0, 1.0, 2.0, 1.0])
    value = loss(logits, target)
    assert value.shape == () and torch.isfinite(value)


@pytest.mark.parametrize("name", ["dice", "lovasz", "jaccard", "tversky"])
def test_region_losses_refuse_classification(loss_registry, name):
    with pytest.raises(UsageError, match=f"'{name}' is a segmentation loss"):
        build_loss(name, loss_registry, task="classification", num_classes=3, ignore_index=-100)


def test_class_weights_of_the_wrong_length(loss_registry):
    with pytest.raises(UsageError, match="2 class weights given, expected 3"):
        build_loss("ce", loss_registry, **SEG, class_weights=[1.0, 2.0])


def test_parse_loss():
    assert parse_loss("ce", NAMES) == [(1.0, "ce")]
    assert parse_loss("ce+dice", NAMES) == [(1.0, "ce"), (1.0, "dice")]
    assert parse_loss(" 0.7 * ce + 0.3*dice ", NAMES) == [(0.7, "ce"), (0.3, "dice")]
    assert parse_loss("2*focal", iter(NAMES)) == [(2.0, "focal")]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("dcie", "unknown loss 'dcie' (did you mean 'dice'?)"),
        ("ce+", "invalid loss 'ce+': empty term"),
        ("", "invalid loss '': empty"),
        ("x*ce", "weight 'x' is not a number"),
        ("0*ce", "weight '0' must be a positive number"),
        ("-1*ce", "weight '-1' must be a positive number"),
        ("nan*ce", "weight 'nan' must be a positive number"),
        ("0.5*0.5*ce", "bad term '0.5*0.5*ce'"),
        ("0.5*", "bad term '0.5*'"),
    ],
)
def test_parse_loss_errors(spec, fragment):
    with pytest.raises(UsageError) as info:
        parse_loss(spec, NAMES)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_class_weights_inverse_median_auto():
    # counts 100, 300, 600: total 1000, C = 3, frequencies 0.1, 0.3, 0.6.
    counts = [100, 300, 600]
    # inverse: 1000/(3*100), 1000/(3*300), 1000/(3*600) = 10/3, 10/9, 5/9
    assert class_weights("inverse", counts) == pytest.approx([10 / 3, 10 / 9, 5 / 9])
    # median: median frequency 0.3 -> 0.3/0.1, 0.3/0.3, 0.3/0.6 = 3, 1, 0.5
    assert class_weights("median", counts) == pytest.approx([3.0, 1.0, 0.5])
    # auto: inverse / mean(inverse) with mean = (10/3 + 10/9 + 5/9) / 3 = 5/3 -> 2, 2/3, 1/3
    assert class_weights("auto", counts) == pytest.approx([2.0, 2 / 3, 1 / 3])


def test_auto_class_weights_are_clipped():
    # 12 classes, one with 1 pixel and eleven with 1000: inverse is proportional to
    # 1 and 1/1000, whose mean is 1.011/12; scaled to mean 1 the rare class gets
    # 12/1.011 = 11.87 -> clipped to 10, the others 12/1011.
    weights = class_weights("auto", [1] + [1000] * 11)
    assert weights == pytest.approx([10.0] + [12 / 1011] * 11)


def test_absent_class_gets_the_largest_present_weight():
    # total 1000, C = 4: inverse 1000/400, 1000/1200, 1000/2400 = 2.5, 0.833, 0.417
    counts = [100, 300, 600, 0]
    assert class_weights("inverse", counts) == pytest.approx([2.5, 5 / 6, 5 / 12, 2.5])
    # median over the present classes is 0.3 -> 3, 1, 0.5 and 3 for the absent one
    assert class_weights("median", counts) == pytest.approx([3.0, 1.0, 0.5, 3.0])
    assert all(math.isfinite(w) for w in class_weights("auto", counts))


def test_class_weights_bad_input():
    with pytest.raises(UsageError, match="did you mean 'median'"):
        class_weights("medain", [1, 2])
    with pytest.raises(UsageError, match="no labels counted"):
        class_weights("auto", [0, 0])


def test_parse_class_weights_modes_and_lists():
    assert parse_class_weights("auto", 3) == "auto"
    assert parse_class_weights(" Median ", 3) == "median"
    assert parse_class_weights("1, 2.5,0.3", 3) == [1.0, 2.5, 0.3]
    assert parse_class_weights("2", 1) == [2.0]


def test_parse_class_weights_files(tmp_path):
    (tmp_path / "w.json").write_text("[1, 2.5, 0]")
    (tmp_path / "w.txt").write_text("1 2.5\n0.3,\n")
    assert parse_class_weights(str(tmp_path / "w.json"), 3) == [1.0, 2.5, 0.0]
    assert parse_class_weights(str(tmp_path / "w.txt"), 3) == [1.0, 2.5, 0.3]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("1,2", "class weights '1,2': 2 values given; expected 3 numbers >= 0"),
        ("1,x,2", "'x' is not a number"),
        ("1,-2,3", "'-2' is not allowed"),
        ("1,nan,3", "'nan' is not allowed"),
        ("0,0,0", "all weights are 0"),
        ("autoo", "did you mean 'auto'"),
        ("missing.json", "class weights file 'missing.json' not found"),
    ],
)
def test_parse_class_weights_errors(value, fragment):
    with pytest.raises(UsageError) as info:
        parse_class_weights(value, 3)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_parse_class_weights_bad_files(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[1, 2,")
    with pytest.raises(UsageError, match="bad.json' is not valid JSON"):
        parse_class_weights(str(bad_json), 3)
    short = tmp_path / "short.json"
    short.write_text('[1, "a", 2]')
    with pytest.raises(UsageError, match="short.json': 'a' is not a number"):
        parse_class_weights(str(short), 3)
    flags = tmp_path / "flags.json"
    flags.write_text("[true, 1, 2]")
    with pytest.raises(UsageError, match="'True' is not a number"):
        parse_class_weights(str(flags), 3)
