"""Anatomies follow the structure the libraries publish, and strategies built on
them say so when they would degenerate (issue 16: items 6, 7, 8, 11, 16, 17)."""

from __future__ import annotations

import json
from functools import lru_cache

import pytest
import torch
from conftest import one_line_error

from ftkit.config import Config
from ftkit.errors import UsageError, unknown
from ftkit.plan.anatomy import anatomy_of
from ftkit.plugins.manager import Plugins
from ftkit.prepare import prepare
from ftkit.resolve import build_model

PLUGINS = Plugins()

MODELS = [
    "tv:resnet18",
    "tv:mobilenet_v2",
    "tv:vit_b_16",
    "tv:swin_t",
    "tv:densenet121",
    "tv:efficientnet_b0",
    "timm:efficientnet_b0",
    "timm:resnet18",
    "timm:vit_tiny_patch16_224",
    "smp:unet:resnet18",
    "smp:unet:mobilenet_v2",
    "smp:unet:efficientnet-b0",
    "smp:unet:tu-efficientnet_b0",
    "smp:unet:tu-resnet18",
    "smp:dpt:tu-vit_tiny_patch16_224",
]


def task_of(spec: str) -> str:
    return "segmentation" if spec.startswith("smp:") else "classification"


@lru_cache(maxsize=2)
def built(spec: str):
    torch.manual_seed(0)
    model = build_model(spec, num_classes=3, task=task_of(spec), plugins=PLUGINS)
    return model, anatomy_of(model, [entry.value for entry in PLUGINS.anatomies])


def plan_for(spec: str, strategy: str, **options):
    config = Config(
        task=task_of(spec),
        model=spec,
        num_classes=5,  # the built-in shapes data's
        strategy=strategy,
        lr=1e-3,
        epochs=40,
        strategy_options=options,
    )
    return prepare(config, PLUGINS)


def first_use(model: torch.nn.Module) -> dict[str, int]:
    """When each parameter's module first runs in a forward pass (pre-hooks, so
    a model's own tokens count as used before its children)."""
    order: dict[str, int] = {}
    handles = []
    for mname, module in model.named_modules():
        own = [f"{mname}.{p}" if mname else p for p, _ in module.named_parameters(recurse=False)]

        def hook(_module, _args, own=own):
            for p in own:
                order.setdefault(p, len(order))

        handles.append(module.register_forward_pre_hook(hook))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for handle in handles:
        handle.remove()
    return order


@pytest.mark.parametrize("spec", MODELS)
def test_anatomy_is_well_formed(spec):
    """Unique names, every parameter in exactly one layer, layers in forward order."""
    model, anatomy = built(spec)
    names = [layer.name for layer in anatomy.layers]
    assert len(names) == len(set(names)), names
    params = [p for layer in anatomy.layers for p in layer.params]
    assert sorted(params) == sorted(n for n, _ in model.named_parameters())
    assert anatomy.head and anatomy.backbone
    assert all(layer.part == "head" for layer in anatomy.layers[len(anatomy.backbone) :])
    used = first_use(model)
    starts = [
        (layer.name, min(used[p] for p in layer.params if p in used))
        for layer in anatomy.layers
        if any(p in used for p in layer.params)  # a classifier smp never calls
    ]
    assert starts == sorted(starts, key=lambda item: item[1]), starts


@pytest.mark.parametrize(
    "spec, minimum",
    [
        ("tv:swin_t", 8),
        ("tv:densenet121", 8),
        ("smp:unet:tu-efficientnet_b0", 16),
        ("smp:unet:tu-resnet18", 9),
        ("smp:unet:efficientnet-b0", 16),
        ("smp:dpt:tu-vit_tiny_patch16_224", 13),
    ],
)
def test_backbones_have_their_published_stages(spec, minimum):
    """No layer group swallows the whole backbone, none is just a norm layer."""
    _, anatomy = built(spec)
    sizes = [sum(anatomy.sizes[p] for p in layer.params) for layer in anatomy.backbone]
    assert len(sizes) >= minimum, [layer.name for layer in anatomy.backbone]
    assert max(sizes) < 0.6 * sum(sizes)  # swin_t's last stage holds just over half
    for layer in anatomy.backbone:
        assert not all(p.split(".")[-2].startswith(("bn", "norm", "_bn")) for p in layer.params)


def test_timm_group_matcher_names():
    _, effnet = built("timm:efficientnet_b0")
    assert [layer.name for layer in effnet.layers] == [
        "stem",
        "blocks.0.0",
        "blocks.1.0",
        "blocks.1.1",
        "blocks.2.0",
        "blocks.2.1",
        "blocks.3.0",
        "blocks.3.1",
        "blocks.3.2",
        "blocks.4.0",
        "blocks.4.1",
        "blocks.4.2",
        "blocks.5.0",
        "blocks.5.1",
        "blocks.5.2",
        "blocks.5.3",
        "blocks.6.0+conv_head+bn2",
        "head",
    ]
    _, resnet = built("timm:resnet18")
    assert [layer.name for layer in resnet.layers] == [
        "stem",
        *(f"layer{i}.{j}" for i in range(1, 5) for j in range(2)),
        "head",
    ]
    _, unet = built("smp:unet:tu-resnet18")
    assert [layer.name for layer in unet.layers] == [
        "encoder.model.stem",
        *(f"encoder.model.layer{i}.{j}" for i in range(1, 5) for j in range(2)),
        "decoder",
        "segmentation_head",
    ]


def test_timm_llrd_and_gradual_use_every_block_once():
    (stage,) = plan_for("timm:efficientnet_b0", "llrd", decay=0.5).plan.stages
    groups = [g.name for g in stage.groups if not g.no_decay]
    assert len(groups) == len(set(groups)) == 18
    lrs = {g.name: g.lr for g in stage.groups}
    assert lrs["blocks.5.3"] == pytest.approx(1e-3 * 0.5**2)
    assert lrs["blocks.5.0"] == pytest.approx(1e-3 * 0.5**5)
    stages = plan_for("timm:efficientnet_b0", "gradual", every=2).plan.stages
    assert [s.name for s in stages[:4]] == [
        "head",
        "+blocks.6.0+conv_head+bn2",
        "+blocks.5.3",
        "+blocks.5.2",
    ]


@pytest.mark.parametrize(
    "spec, params",
    [
        ("tv:vit_b_16", ["class_token", "encoder.pos_embedding"]),
        ("timm:vit_tiny_patch16_224", ["cls_token", "pos_embed"]),
        ("smp:dpt:tu-vit_tiny_patch16_224", ["encoder.model.cls_token", "encoder.model.pos_embed"]),
        ("tv:swin_t", ["features.1.0.attn.relative_position_bias_table"]),
    ],
)
def test_no_weight_decay_on_tokens_and_position_embeddings(spec, params):
    (stage,) = plan_for(spec, "full", weight_decay=0.05).plan.stages
    decay = {p: g.weight_decay for g in stage.groups for p in g.params}
    assert {p: decay[p] for p in params} == {p: 0.0 for p in params}
    assert max(decay.values()) == 0.05  # the weights still decay


def test_nested_no_weight_decay_lists_are_prefixed():
    from ftkit.plan.anatomy import param_facts

    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.zeros(4, 4))
            self.proj = torch.nn.Linear(4, 4)

        def no_weight_decay(self):
            return {"table"}

    outer = torch.nn.Sequential(Inner(), torch.nn.Linear(4, 2))
    _, no_decay = param_facts(outer)
    assert "0.table" in no_decay
    assert "0.proj.weight" not in no_decay and "1.weight" not in no_decay


def test_llrd_over_too_few_backbone_groups_is_refused():
    with pytest.raises(UsageError, match=r"llrd: the model has 2 backbone layer groups \(early"):
        plan_for("tv:resnet18", "llrd", regroup="early=conv1|bn1|layer1|layer2;late=layer;h=fc")


def test_train_from_accepts_the_names_plans_print():
    spec = "smp:unet:resnet18"
    (llrd,) = plan_for(spec, "llrd").plan.stages
    printed = {g.name for g in llrd.groups}
    assert "head" in printed
    for name in printed:
        (stage,) = plan_for(spec, "freeze", train_from=name).plan.stages
        assert stage.groups
    (head_only,) = plan_for(spec, "freeze", train_from="head").plan.stages
    (default,) = plan_for(spec, "freeze").plan.stages
    assert head_only.trainable == default.trainable
    with pytest.raises(UsageError) as err:
        plan_for(spec, "freeze", train_from="layer9")
    assert str(err.value).endswith(
        "known: stem, layer1, layer2, layer3, layer4, decoder, segmentation_head, head"
    )


def test_unknown_name_in_a_long_list_shows_the_closest():
    import timm

    message = str(unknown("timm model", "resnet181", timm.list_models()))
    assert message.startswith("unknown timm model 'resnet181' (did you mean 'resnet18'?); ")
    assert f"{len(timm.list_models()):,} known, closest: resnet18, " in message
    assert len(message) < 300
    # short lists are still given whole
    assert str(unknown("task", "x", ["segmentation", "classification"])).endswith(
        "known: classification, segmentation"
    )


def test_plan_table_fits_long_group_names():
    from ftkit.plan_report import plan_table

    prepared = plan_for("smp:dpt:tu-vit_tiny_patch16_224", "llrd")
    table = plan_table(prepared.plan, prepared.anatomy, prepared.config)
    stage = prepared.plan.stages[0]
    assert max(len(g.name) for g in stage.groups) > 24
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["group", "params"])
    rows = lines[header + 1 : header + 1 + len(stage.groups)]
    # every row lines its columns up under the header's
    assert {len(line) for line in rows} == {len(lines[header]) + 3}, [lines[header], *rows]


def test_plot_legend_is_outside_and_colours_are_distinct():
    from ftkit.plan_report import plan_figure

    prepared = plan_for("timm:efficientnet_b0", "llrd")
    fig = plan_figure(prepared.plan, steps_per_epoch=2)
    (ax,) = fig.axes
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert not legend.overlaps(ax.get_window_extent())
    colours = [tuple(line.get_color()) for line in ax.get_lines()]
    assert len(colours) == 18 and len(set(colours)) == 18


@pytest.mark.parametrize(
    "spec, size",
    [
        ("tv:vit_b_16", 224),
        ("timm:vit_tiny_patch16_224", 224),
        ("smp:dpt:tu-vit_tiny_patch16_224", 224),
    ],
)
def test_fixed_input_size_is_said_by_plan(spec, size):
    prepared = plan_for(spec, "full")  # --image-size 64 by default
    expected = f"{spec} takes {size}x{size} images, not 64x64; use --image-size {size}"
    assert expected in prepared.plan.warnings


def test_run_at_the_wrong_size_refuses_before_writing(ftkit, tmp_path):
    line = one_line_error(
        ftkit(
            "run",
            "--strategy",
            "full",
            "--task",
            "classification",
            "--model",
            "timm:vit_tiny_patch16_224",
            "--image-size",
            "32",
            "--num-samples",
            "16",
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--out",
            "run",
        )
    )
    assert "takes 224x224 images, not 32x32; use --image-size 224" in line
    assert not (tmp_path / "run").exists()


CRASH = """
import ftkit

def crash(logits, target):
    raise RuntimeError("deliberate crash in the first step")

@ftkit.hookimpl
def ftkit_register_losses(register):
    register(ftkit.Loss("crash", lambda **kw: crash))
"""

TINY = ["--image-size", "32", "--num-samples", "16", "--batch-size", "4", "--epochs", "2"]


@pytest.mark.parametrize("existed", [False, True])
def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_directory(ftkit, tmp_path, existed):
    (tmp_path / "crashloss.py").write_text(CRASH)
    if existed:
        (tmp_path / "run").mkdir()
    args = ["run", "--plugin", "crashloss", "--loss", "crash", *TINY, "--out", "run"]
    result = ftkit(*args)
    assert result.returncode == 1 and "deliberate crash" in result.stderr
    # an empty --out the user made stays, emptied; one the run made is gone
    assert (tmp_path / "run").exists() == existed
    if existed:
        assert list((tmp_path / "run").iterdir()) == []
    # so the same command can simply be run again
    again = ftkit(*args)
    assert "already exists" not in again.stderr


def test_plan_json_still_lists_groups_for_a_vit(ftkit):
    result = ftkit(
        "plan", "--strategy", "llrd", "--task", "classification",
        "--model", "timm:vit_tiny_patch16_224", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    groups = [g["name"] for g in json.loads(result.stdout)["stages"][0]["groups"]]
    assert "blocks.0" in groups and "blocks.11+norm" in groups
