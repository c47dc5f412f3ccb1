"""Strategies produce exact plans: every parameter's LR and weight decay."""

from __future__ import annotations

import json
import math

import pytest
from conftest import one_line_error

from ftkit.config import Config
from ftkit.plugins.manager import Plugins
from ftkit.prepare import prepare

RESNET = dict(task="classification", model="tv:resnet18", num_classes=10)


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def plan_for(plugins, strategy, lr=1e-3, epochs=15, options=None, **kw):
    config = Config(
        strategy=strategy, lr=lr, epochs=epochs, strategy_options=options or {}, **{**RESNET, **kw}
    )
    return prepare(config, plugins)


def lrs(stage):
    return {p: g.lr for g in stage.groups for p in g.params}


def decays(stage):
    return {p: g.weight_decay for g in stage.groups for p in g.params}


def test_resnet18_anatomy(plugins):
    prepared = plan_for(plugins, "full")
    sizes = {
        layer.name: sum(prepared.anatomy.sizes[p] for p in layer.params)
        for layer in prepared.anatomy.layers
    }
    assert sizes == {
        "stem": 9_536,
        "layer1": 147_968,
        "layer2": 525_568,
        "layer3": 2_099_712,
        "layer4": 8_393_728,
        "head": 5_130,
    }
    assert sum(sizes.values()) == 11_181_642


def test_full_trains_everything_at_one_lr(plugins):
    (stage,) = plan_for(plugins, "full", lr=3e-4).plan.stages
    assert set(lrs(stage).values()) == {3e-4}
    assert stage.frozen == ()
    wd = decays(stage)
    assert wd["layer1.0.conv1.weight"] == 0.01 and wd["fc.weight"] == 0.01
    # no decay on biases and norm parameters
    assert wd["fc.bias"] == wd["bn1.weight"] == wd["layer4.1.bn2.bias"] == 0.0
    assert sum(1 for v in wd.values() if v == 0.0) == 20 * 2 + 1


def test_freeze_is_a_linear_probe(plugins):
    (stage,) = plan_for(plugins, "freeze").plan.stages
    assert sorted(lrs(stage)) == ["fc.bias", "fc.weight"]
    assert sum(g.num_params for g in stage.groups) == 5_130
    (partial,) = plan_for(plugins, "freeze", options={"train_from": "layer4"}).plan.stages
    assert sum(g.num_params for g in partial.groups) == 8_393_728 + 5_130
    assert "layer3.1.conv2.weight" in partial.frozen


def test_discriminative_follows_seed_000(plugins):
    (stage,) = plan_for(plugins, "discriminative").plan.stages
    by_param = lrs(stage)
    assert by_param["conv1.weight"] == by_param["layer1.1.conv2.weight"] == pytest.approx(1e-5)
    assert by_param["layer2.0.conv1.weight"] == by_param["layer3.1.bn2.bias"] == pytest.approx(1e-4)
    assert by_param["layer4.0.downsample.0.weight"] == pytest.approx(1e-3)
    assert by_param["fc.weight"] == pytest.approx(1e-2)
    sizes = {}
    for g in stage.groups:
        base = g.name.split("/")[0]
        sizes[base] = sizes.get(base, 0) + g.num_params
    # seed 000 printed 296,896 / 3,408,384 / 7,079,424: these are the real sizes
    assert sizes == {"early": 157_504, "middle": 2_625_280, "late": 8_393_728, "head": 5_130}


def test_discriminative_multipliers_and_regroup(plugins):
    options = {
        "regroup": "low=conv1|bn1|layer1|layer2;high=layer3|layer4;head=fc",
        "multipliers": "0.5,1,4",
    }
    (stage,) = plan_for(plugins, "discriminative", lr=1e-4, options=options).plan.stages
    by_param = lrs(stage)
    assert by_param["layer2.1.conv1.weight"] == pytest.approx(5e-5)
    assert by_param["layer3.0.conv1.weight"] == pytest.approx(1e-4)
    assert by_param["fc.bias"] == pytest.approx(4e-4)


def test_discriminative_multiplier_zero_freezes_a_group(plugins):
    """Seed 001: layer4 at 1e-4, the head at 1e-3, everything else frozen."""
    options = {
        "regroup": "rest=conv1|bn1|layer[123];layer4=layer4;head=fc",
        "multipliers": "0,1,10",
    }
    prepared = plan_for(plugins, "discriminative", lr=1e-4, options=options)
    (stage,) = prepared.plan.stages
    by_param = lrs(stage)
    assert set(by_param) == {p for p in prepared.anatomy.sizes if p.startswith(("layer4", "fc"))}
    assert by_param["layer4.0.conv1.weight"] == pytest.approx(1e-4)
    assert by_param["fc.weight"] == pytest.approx(1e-3)
    assert "layer1.0.conv1.weight" in stage.frozen and "conv1.weight" in stage.frozen


@pytest.mark.parametrize("multipliers", ["0,0,0", "-1,1,10", "inf,1,1"])
def test_discriminative_refuses_negative_or_all_zero_multipliers(plugins, multipliers):
    from ftkit.errors import UsageError

    options = {
        "regroup": "rest=conv1|bn1|layer[123];layer4=layer4;head=fc",
        "multipliers": multipliers,
    }
    with pytest.raises(UsageError, match="multipliers must be >= 0"):
        plan_for(plugins, "discriminative", options=options)


def test_llrd_on_a_resnet(plugins):
    (stage,) = plan_for(plugins, "llrd", lr=1e-3, options={"decay": 0.5}).plan.stages
    by_param = lrs(stage)
    # stem is layer 0, layer1..4 are 1..4, the head is L + 1 = 5
    for name, power in [
        ("conv1.weight", 5),
        ("layer1.0.conv1.weight", 4),
        ("layer4.0.conv1.weight", 1),
        ("fc.weight", 0),
    ]:
        assert by_param[name] == pytest.approx(1e-3 * 0.5**power)


def test_llrd_matches_timm_param_groups_layer_decay(plugins):
    from timm.optim import param_groups_layer_decay

    prepared = prepare(
        Config(
            task="classification",
            model="timm:vit_tiny_patch16_224",
            num_classes=10,
            strategy="llrd",
            lr=1e-3,
            strategy_options={"decay": 0.65, "weight_decay": 0.05},
        ),
        plugins,
    )
    (stage,) = prepared.plan.stages
    model = prepared.model
    names = {id(p): n for n, p in model.named_parameters()}
    expected_lr, expected_wd = {}, {}
    for group in param_groups_layer_decay(
        model, weight_decay=0.05, layer_decay=0.65, no_weight_decay_list=model.no_weight_decay()
    ):
        for p in group["params"]:
            expected_lr[names[id(p)]] = 1e-3 * group["lr_scale"]
            expected_wd[names[id(p)]] = group["weight_decay"]
    ours = lrs(stage)
    assert set(ours) == set(expected_lr)
    assert all(math.isclose(ours[n], expected_lr[n], rel_tol=1e-12) for n in ours)
    assert decays(stage) == expected_wd


def converged_baseline(path, num_classes: int = 5):
    """A stand-in for a converged U-Net: plan checks that --from fits the model."""
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    model = smp.Unet("resnet18", encoder_weights=None, classes=num_classes)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_two_stage_gives_seed_004_table(plugins, tmp_path):
    baseline = converged_baseline(tmp_path / "baseline.safetensors")
    prepared = prepare(
        Config(
            start_from=str(baseline),
            loss="ce+dice",  # a loss switch from a converged model: seed 004
            strategy="two-stage",
            lr=1e-5,
            epochs=10,
            num_classes=5,
            strategy_options={"lr_scale": 0.3},
        ),
        plugins,
    )
    head, both = prepared.plan.stages
    head_params = set(prepared.anatomy.params_of(prepared.anatomy.head))
    assert head_params and all(
        p.startswith(("decoder.", "segmentation_head.")) for p in head_params
    )
    assert set(lrs(head)) == head_params
    assert all(lr == pytest.approx(3e-6) for lr in lrs(head).values())
    stage2 = lrs(both)
    assert stage2["encoder.layer3.0.conv1.weight"] == pytest.approx(1.5e-7)
    assert stage2["segmentation_head.0.weight"] == pytest.approx(6e-7)
    assert (head.epochs, both.epochs) == (5, 5)
    assert prepared.plan.warnings == ()


def test_gradual_unfreezes_from_the_top(plugins):
    stages = plan_for(plugins, "gradual", epochs=12, options={"every": 3}).plan.stages
    assert [s.name for s in stages] == ["head", "+layer4", "+layer3", "+layer2"]
    trainable = [sum(g.num_params for g in s.groups) for s in stages]
    assert trainable == [
        5_130,
        5_130 + 8_393_728,
        5_130 + 8_393_728 + 2_099_712,
        5_130 + 8_393_728 + 2_099_712 + 525_568,
    ]
    assert [s.epochs for s in stages] == [3, 3, 3, 3]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"backbone_div": "0"}, "option 'backbone_div' must be > 0, got '0'"),
        ({"lr_scale": "nan"}, "option 'lr_scale' must be a finite number"),
        ({"lr_scale": "-1"}, "option 'lr_scale' must be > 0"),
        ({"backbone_dv": "2"}, "unknown option 'backbone_dv' (did you mean 'backbone_div'?)"),
    ],
)
def test_bad_strategy_options(plugins, options, message):
    from ftkit.errors import UsageError

    with pytest.raises(
        UsageError, match=".*" + message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")
    ):
        plan_for(plugins, "two-stage", options=options)


def test_plan_cli_prints_the_seed_004_lrs(ftkit):
    out = ftkit("plan", "--strategy", "two-stage", "--lr", "1e-5", "-o", "lr_scale=0.3").stdout
    stage1, stage2 = out.split("stage 2/2")
    assert "3e-6" in stage1
    assert "1.5e-7" in stage2 and "6e-7" in stage2
    # without --from, these LRs are linted as training from scratch
    assert "far below the 1e-4..1e-3 band for training from scratch" in out


def test_seed_004_original_setting_warns(ftkit, tmp_path):
    # the built-in shapes have 5 classes
    baseline = converged_baseline(tmp_path / "baseline.safetensors")
    result = ftkit(
        "plan",
        "--strategy",
        "loss-switch",
        "--from",
        str(baseline),
        "--lr",
        "1e-5",
        "-o",
        "lr_scale=0.3",
        "-o",
        "backbone_div=100",
        "-o",
        "classifier_div=10",
        "--json",
    )
    plan = json.loads(result.stdout)
    backbone = [w for w in plan["warnings"] if "group 'backbone'" in w]
    assert len(backbone) == 1
    assert "LR 3e-8" in backbone[0] and "barely move the backbone" in backbone[0]


def test_plan_json_shape(ftkit):
    plan = json.loads(
        ftkit("plan", "--json", "--strategy", "gradual", "--epochs", "4", "-o", "every=2").stdout
    )
    assert set(plan) >= {"stages", "warnings"}
    for stage in plan["stages"]:
        assert {"name", "epochs", "loss", "groups", "frozen"} <= set(stage)
        assert isinstance(stage["frozen"], list)
        for group in stage["groups"]:
            assert {"name", "lr", "weight_decay", "params", "num_params"} <= set(group)
            assert isinstance(group["lr"], float) and group["params"]


def test_loss_switch_needs_from(ftkit):
    line = one_line_error(ftkit("plan", "--strategy", "loss-switch"))
    assert "strategy 'loss-switch' needs --from CHECKPOINT" in line


def test_plot(ftkit, tmp_path):
    result = ftkit(
        "plan",
        "--strategy",
        "gradual",
        "--epochs",
        "4",
        "-o",
        "every=2",
        "--plot",
        "lr.png",
        "--num-samples",
        "40",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
