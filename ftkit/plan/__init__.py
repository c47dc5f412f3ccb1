"""The plan side, torch-free and pure data: what a strategy is and asks for
(``strategy``, its ``options``), the model's named layers it asks in
(``anatomy``), the stages and parameter groups with absolute LRs that come
out (``stages``), how a strategy's stages become the plan (``build``), the LR
schedule within a stage (``schedule``), the checks of a finished plan
(``lint``) and how its figures are written (``units``).

``ftkit plan`` needs nothing else; ``ftkit/engine/`` executes what it builds.
Modules inside ftkit import the submodule they need, never this package.
"""

from ftkit.plan.build import make_plan
from ftkit.plan.stages import ParamGroup, Plan, Stage, steps_per_epoch

__all__ = ["ParamGroup", "Plan", "Stage", "make_plan", "steps_per_epoch"]
