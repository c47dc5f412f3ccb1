"""The built-in datasets, registered through the same hook a plugin uses.

Imported at CLI start-up: the factory imports torch only when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ftkit.hooks import hookimpl

if TYPE_CHECKING:
    from ftkit.data.splits import DataSplits


@dataclass(frozen=True)
class Dataset:
    """``--data builtin:NAME``: ``factory(task=, image_size=, num_samples=,
    seed=)`` returns an ``ftkit.data.DataSplits`` for that task's targets."""

    name: str
    factory: Callable[..., DataSplits]


def shapes(*, task: str, image_size: int = 64, num_samples: int = 256, seed: int = 0) -> DataSplits:
    """Circles, squares, triangles and a rare star, drawn procedurally."""
    from ftkit.data.shapes import shapes_splits

    return shapes_splits(task=task, image_size=image_size, num_samples=num_samples, seed=seed)


@hookimpl
def ftkit_register_datasets(register: Callable[[Dataset], None]) -> None:
    register(Dataset("shapes", shapes))
