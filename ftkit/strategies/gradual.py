"""gradual: gradual unfreezing (ULMFiT). The head trains first; every
``every`` epochs one more layer group from the top joins, at the same LR.
Seed 000 on a ResNet: head, then layer4, layer3, layer2 at epochs 4, 7, 10.
"""

from ftkit.hooks import hookimpl
from ftkit.plan.anatomy import Anatomy
from ftkit.plan.options import Option, positive
from ftkit.plan.stages import Stage
from ftkit.plan.strategy import PlanRequest, Strategy, group


def build(anatomy: Anatomy, req: PlanRequest):
    every = req.options["every"]
    backbone = list(reversed(anatomy.backbone))  # top first
    stages, start, unfrozen = [], 0, 0
    while start < req.epochs:
        last = unfrozen == len(backbone) or start + every >= req.epochs
        epochs = req.epochs - start if last else every
        layers = [*reversed(backbone[:unfrozen]), *anatomy.head]
        name = "head" if unfrozen == 0 else f"+{backbone[unfrozen - 1].name}"
        stages.append(Stage(name, epochs, (group("trainable", anatomy.params_of(layers), req.lr),)))
        start += epochs
        unfrozen += 1
    return stages


@hookimpl
def ftkit_register_strategies(register):
    register(
        Strategy(
            "gradual",
            "Gradual unfreezing: head first, one more layer group every N epochs.",
            build,
            options=(Option("every", int, 3, "epochs between unfreezing steps", positive),),
        )
    )
