"""llrd: layer-wise LR decay, ``lr * decay ** (L + 1 - layer_id)``.

Layer ids follow the anatomy from input to output; every head layer shares the
top id ``L + 1``. For timm models the anatomy comes from timm's own
``group_matcher``, so the LR of every parameter equals the base LR times the
``lr_scale`` of ``timm.optim.param_groups_layer_decay``.
"""

from ftkit.errors import UsageError
from ftkit.hooks import hookimpl
from ftkit.plan.anatomy import Anatomy
from ftkit.plan.options import Option, fraction
from ftkit.plan.strategy import PlanRequest, Strategy, group, single_stage


def layer_ids(anatomy: Anatomy) -> list[tuple[str, tuple[str, ...], int]]:
    backbone = anatomy.backbone
    if len(backbone) < 3:  # a decay over one or two LRs is not layer-wise any more
        names = ", ".join(layer.name for layer in backbone)
        raise UsageError(
            f"llrd: the model has {len(backbone)} backbone layer groups ({names}), needs 3; "
            "give finer ones with -o regroup=..., or use two-stage"
        )
    ids = [(layer.name, layer.params, i) for i, layer in enumerate(backbone)]
    if anatomy.head:
        ids.append(("head", anatomy.params_of(anatomy.head), len(backbone)))
    return ids


def build(anatomy: Anatomy, req: PlanRequest):
    layers = layer_ids(anatomy)
    top = layers[-1][2]
    decay = req.options["decay"]
    return single_stage(
        "llrd",
        req.epochs,
        *(group(name, params, req.lr * decay ** (top - i)) for name, params, i in layers),
    )


@hookimpl
def ftkit_register_strategies(register):
    register(
        Strategy(
            "llrd",
            "Layer-wise LR decay: each layer down from the head trains decay x slower.",
            build,
            options=(
                Option(
                    "decay", float, 0.75, "LR ratio between a layer and the one above", fraction
                ),
            ),
        )
    )
