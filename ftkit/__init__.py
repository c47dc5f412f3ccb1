"""ftkit: fine-tuning strategies for PyTorch vision models.

The one public door. Plugin authors import from here only: the hook marker,
one typed object per registration hook, what hooks pass (``Run``, ``Stage``,
``EpochRecord``, ``Summary``), the plan's vocabulary and its helpers, and
the readers a model family needs. Notebook users call ``plan_run``, ``run``
and ``evaluate`` (``ftkit/api.py``), which take the CLI's options and check
them with the same code. ``ftkit.testing`` helps a plugin's tests.

Importing ftkit stays cheap (no torch): what needs torch loads on first use.
"""

from typing import Any

from ftkit.data.builtin import Dataset
from ftkit.data.splits import DataSplits
from ftkit.errors import PluginError, UsageError
from ftkit.hooks import hookimpl
from ftkit.losses import Loss
from ftkit.models.family import ModelFamily, NamedWeights, Preprocessing
from ftkit.models.hub import hub_file
from ftkit.optimizers import Optimizer
from ftkit.plan.anatomy import BACKBONE, HEAD, Anatomy, AnatomyProvider, Layer, from_prefixes
from ftkit.plan.options import Option
from ftkit.plan.stages import ParamGroup, Plan, Stage
from ftkit.plan.strategy import GroupSpec, PlanRequest, StageSpec, Strategy, group, single_stage
from ftkit.plugins.records import EpochRecord, Summary
from ftkit.plugins.run import Run
from ftkit.tasks import Task, classification_metrics
from ftkit.version import __version__

# name -> module: imported on first use, since these import torch
_LAZY = {
    "read_state": "ftkit.models.weights",
    "SegmentationMetrics": "ftkit.metrics",
    "ClassificationMetrics": "ftkit.metrics",
    "plan_run": "ftkit.api",
    "run": "ftkit.api",
    "evaluate": "ftkit.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ftkit' has no attribute '{name}'")


__all__ = [
    "BACKBONE",
    "HEAD",
    "Anatomy",
    "AnatomyProvider",
    "ClassificationMetrics",
    "DataSplits",
    "Dataset",
    "EpochRecord",
    "GroupSpec",
    "Layer",
    "Loss",
    "ModelFamily",
    "NamedWeights",
    "Option",
    "Optimizer",
    "ParamGroup",
    "Plan",
    "PlanRequest",
    "PluginError",
    "Preprocessing",
    "Run",
    "SegmentationMetrics",
    "Stage",
    "StageSpec",
    "Strategy",
    "Summary",
    "Task",
    "UsageError",
    "__version__",
    "classification_metrics",
    "evaluate",
    "from_prefixes",
    "group",
    "hookimpl",
    "hub_file",
    "plan_run",
    "read_state",
    "run",
    "single_stage",
]
