"""full: every parameter trains at one LR (also how a baseline is trained)."""

from ftkit.hooks import hookimpl
from ftkit.plan.anatomy import Anatomy
from ftkit.plan.strategy import PlanRequest, Strategy, group, single_stage


def build(anatomy: Anatomy, req: PlanRequest):
    return single_stage("full", req.epochs, group("all", anatomy.params_of(anatomy.layers), req.lr))


@hookimpl
def ftkit_register_strategies(register):
    register(Strategy("full", "Everything trainable at one LR (how a baseline is trained).", build))
