"""freeze: feature extraction / linear probing, or partial freezing.

By default only the head trains. ``train_from=LAYER`` also trains that layer
and every layer after it (e.g. ``train_from=layer4`` on a ResNet).
"""

from ftkit.hooks import hookimpl
from ftkit.plan.anatomy import Anatomy
from ftkit.plan.options import Option
from ftkit.plan.strategy import PlanRequest, Strategy, group, single_stage


def build(anatomy: Anatomy, req: PlanRequest):
    start = req.options["train_from"]
    if start:
        index = anatomy.layers.index(anatomy.layer(start))
        layers = anatomy.layers[index:]
    else:
        layers = anatomy.head
    return single_stage("freeze", req.epochs, group("trainable", anatomy.params_of(layers), req.lr))


@hookimpl
def ftkit_register_strategies(register):
    register(
        Strategy(
            "freeze",
            "Linear probe: train the head only, or every layer from a named one on.",
            build,
            options=(
                Option(
                    "train_from",
                    str,
                    "",
                    "first layer group to train (default: the "
                    "head only); see the groups with 'ftkit plan'",
                ),
            ),
        )
    )
