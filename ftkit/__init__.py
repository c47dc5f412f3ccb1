"""ftkit: fine-tuning strategies for PyTorch vision models.

The public facade for plugin authors: the hook marker and one typed object per
registration hook. Importing ftkit stays cheap (no torch).
"""

from ftkit.data import DataSplits
from ftkit.data.builtin import Dataset
from ftkit.engine.lifecycle import Run  # torch-free: what lifecycle hooks get
from ftkit.engine.record import EpochRecord, Summary
from ftkit.errors import PluginError, UsageError
from ftkit.losses import Loss
from ftkit.models.family import ModelFamily, NamedWeights, Preprocessing
from ftkit.optimizers import Optimizer
from ftkit.plan.anatomy import Anatomy, AnatomyProvider, Layer
from ftkit.plan.options import Option
from ftkit.plan.strategy import GroupSpec, PlanRequest, StageSpec, Strategy
from ftkit.plugins.hookspecs import hookimpl
from ftkit.tasks import Task

__version__ = "0.1.0"
__all__ = [
    "Anatomy",
    "AnatomyProvider",
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
    "PlanRequest",
    "PluginError",
    "Preprocessing",
    "Run",
    "StageSpec",
    "Strategy",
    "Summary",
    "Task",
    "UsageError",
    "__version__",
    "hookimpl",
]
