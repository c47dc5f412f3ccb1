"""The plan side, torch-free: what a strategy asks for (``strategy``, its
``options``), the model's named layers it asks in (``anatomy``), the stages
and parameter groups with absolute LRs that come out (``stages``), the LR
schedule within a stage (``schedule``), the checks of a finished plan
(``lint``) and the table and plot of ``ftkit plan`` (``report``).

``ftkit plan`` needs nothing else; ``ftkit/engine/`` executes what it builds.
"""

from ftkit.plan.stages import ParamGroup, Plan, Stage, make_plan, steps_per_epoch

__all__ = ["ParamGroup", "Plan", "Stage", "make_plan", "steps_per_epoch"]
