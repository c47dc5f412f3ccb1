"""two-stage: the head first, then backbone and head at their own ratios.

Stage 1 trains the head at ``lr * lr_scale``; stage 2 trains the backbone at
``lr * lr_scale / backbone_div`` and the head at ``lr * lr_scale /
classifier_div``. Seed 004's recommended table is ``--lr 1e-5 -o
lr_scale=0.3``: 3e-6, then 1.5e-7 and 6e-7. Nothing else multiplies the LR.
"""

from ftkit.errors import UsageError
from ftkit.hooks import hookimpl
from ftkit.plan.anatomy import Anatomy
from ftkit.plan.options import Option, positive
from ftkit.plan.stages import Stage
from ftkit.plan.strategy import PlanRequest, Strategy, group

OPTIONS = (
    Option(
        "stage1_epochs",
        int,
        0,
        "epochs of the head-only stage (0: half of --epochs)",
        lambda v: None if v >= 0 else "must be >= 0",
    ),
    Option("lr_scale", float, 1.0, "multiplies --lr in both stages", positive),
    Option(
        "backbone_div", float, 20.0, "stage 2 backbone LR = lr * lr_scale / backbone_div", positive
    ),
    Option(
        "classifier_div", float, 5.0, "stage 2 head LR = lr * lr_scale / classifier_div", positive
    ),
)


def build(anatomy: Anatomy, req: PlanRequest):
    opts = req.options
    first = opts["stage1_epochs"] or max(1, req.epochs // 2)
    if req.epochs < 2 or first >= req.epochs:
        raise UsageError(
            f"two stages need --epochs ({req.epochs}) greater than stage1_epochs ({first})"
        )
    lr = req.lr * opts["lr_scale"]
    head = anatomy.params_of(anatomy.head)
    return [
        Stage("head", first, (group("head", head, lr),)),
        Stage(
            "backbone+head",
            req.epochs - first,
            (
                group("backbone", anatomy.params_of(anatomy.backbone), lr / opts["backbone_div"]),
                group("head", head, lr / opts["classifier_div"]),
            ),
        ),
    ]


@hookimpl
def ftkit_register_strategies(register):
    register(
        Strategy(
            "two-stage",
            "Head first, then backbone + head at lr/backbone_div and lr/classifier_div.",
            build,
            options=OPTIONS,
        )
    )
