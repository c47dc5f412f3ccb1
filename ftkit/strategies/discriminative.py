"""discriminative: one LR multiplier per group, lowest at the input.

The default groups are seed 000's for a ResNet: early (conv1, bn1, layer1)
x0.01, middle (layer2, layer3) x0.1, late (layer4) x1, head x10. For other
models the backbone layers are split the same way, 2:2:1 by count. With
``regroup`` the user's groups are used as they are, one multiplier each.
"""

import math

from ftkit.errors import UsageError
from ftkit.hooks import hookimpl
from ftkit.plan.anatomy import Anatomy
from ftkit.plan.options import Option
from ftkit.plan.strategy import PlanRequest, Strategy, group, single_stage


def default_groups(anatomy: Anatomy) -> list[tuple[str, tuple[str, ...]]]:
    backbone = anatomy.backbone
    n = len(backbone)
    if n < 3:
        raise UsageError(
            f"discriminative: the model has {n} backbone layer groups, needs 3; "
            "give your own with -o regroup=..."
        )
    early = round(n * 0.4)
    late = max(1, n - 2 * early)
    middle = n - early - late
    cuts = [
        ("early", backbone[:early]),
        ("middle", backbone[early : early + middle]),
        ("late", backbone[early + middle :]),
        ("head", anatomy.head),
    ]
    return [(name, anatomy.params_of(layers)) for name, layers in cuts]


def build(anatomy: Anatomy, req: PlanRequest):
    if req.options["regroup"]:
        groups = [(layer.name, layer.params) for layer in anatomy.layers]
    else:
        groups = default_groups(anatomy)
    try:
        mults = [float(m) for m in req.options["multipliers"].split(",")]
    except ValueError:
        raise UsageError(
            f"discriminative: multipliers must be numbers separated by commas, "
            f"got {req.options['multipliers']!r}"
        ) from None
    if len(mults) != len(groups):
        names = ", ".join(name for name, _ in groups)
        raise UsageError(
            f"discriminative: {len(groups)} groups ({names}) need "
            f"{len(groups)} multipliers, got {len(mults)}"
        )
    if any(not (m >= 0 and math.isfinite(m)) for m in mults) or not any(mults):
        raise UsageError(
            f"discriminative: multipliers must be >= 0 (0 freezes a group) and not all 0, "
            f"got {req.options['multipliers']!r}"
        )
    # x0 freezes a group: seed 001's "layer4 at 1e-4, head at 1e-3, the rest frozen".
    return single_stage(
        "discriminative",
        req.epochs,
        *(
            group(name, params, req.lr * m)
            for (name, params), m in zip(groups, mults, strict=True)
            if m > 0
        ),
    )


@hookimpl
def ftkit_register_strategies(register):
    register(
        Strategy(
            "discriminative",
            "One LR multiplier per layer group (early x0.01 ... head x10).",
            build,
            options=(
                Option(
                    "multipliers",
                    str,
                    "0.01,0.1,1,10",
                    "LR multipliers from input to output, one per group; 0 freezes a group",
                ),
            ),
        )
    )
