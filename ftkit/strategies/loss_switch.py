"""loss-switch: fine-tune a converged baseline with a new loss (seed 004).

Starts from ``--from`` (weights only), switches to ``ce+dice`` with
automatic class weights by default, and runs the two-stage plan in the
loss-switch band (1e-7..1e-6): with the default ``--lr 1e-5`` and
``lr_scale=0.3``, seed 004's table: head 3e-6, then backbone 1.5e-7 and head
6e-7. The baseline guard watches the first epochs against the baseline.

BatchNorm statistics stay the baseline's (``bn_mode=frozen``): re-estimated
from small batches they would move mIoU more than LRs this small do, and the
guard would take that drift for learning.
"""

from dataclasses import replace

from ftkit.hooks import hookimpl
from ftkit.plan.options import Option
from ftkit.plan.strategy import SCHEDULES, Strategy
from ftkit.strategies import two_stage

OPTIONS = tuple(
    replace(o, default=0.3) if o.name == "lr_scale" else o for o in two_stage.OPTIONS
) + (
    Option(
        "schedule",
        str,
        "constant",
        "LR schedule within each stage (the LRs are already "
        "tiny, so they are kept constant by default)",
        choices=SCHEDULES,
    ),
    Option(
        "bn_mode",
        str,
        "frozen",
        "BatchNorm running statistics: 'frozen' keeps the baseline's everywhere, 'eval' only "
        "in frozen layers, 'train' updates them everywhere",
        choices=("eval", "train", "frozen"),
    ),
)


@hookimpl
def ftkit_register_strategies(register):
    register(
        Strategy(
            "loss-switch",
            "From a converged baseline (--from): new loss, two stages, tiny LRs.",
            two_stage.build,
            options=OPTIONS,
            default_loss="ce+dice",
            default_class_weights="auto",
            requires_from=True,
            lint_situation="loss-switch",
        )
    )
