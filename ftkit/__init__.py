"""ftkit: fine-tuning strategies for PyTorch vision models.

Importing ftkit stays cheap (no torch): plugin authors need only
``ftkit.hookimpl``, ``ftkit.Strategy`` and ``ftkit.ModelFamily``.
"""

from ftkit.models.family import ModelFamily
from ftkit.options import Option
from ftkit.plugins.manager import hookimpl
from ftkit.strategy import Strategy

__version__ = "0.1.0"
__all__ = ["ModelFamily", "Option", "Strategy", "__version__", "hookimpl"]
