"""The loss a run trains with (and ``ftkit eval`` measures): ``--loss`` built
from the registered losses, with ``--class-weights`` resolved on the data."""

from __future__ import annotations

from typing import Any

from ftkit.plugins.manager import Plugins
from ftkit.prepare import Prepared


def make_loss(prepared: Prepared, data: Any, plugins: Plugins) -> tuple[Any, str | None]:
    """The loss, and the line that reports the class weights it uses (if any):
    the caller decides whether to print it (training does, eval's JSON must not)."""
    from ftkit.class_weights import class_weights, parse_class_weights
    from ftkit.losses import build_loss

    weights, note = None, None
    if prepared.class_weights:
        parsed = parse_class_weights(prepared.class_weights, prepared.num_classes)
        weights = class_weights(parsed, data.label_counts()) if isinstance(parsed, str) else parsed
        note = (
            "class weights ("
            + (parsed if isinstance(parsed, str) else "given")
            + "): "
            + ", ".join(f"{n} {w:.3g}" for n, w in zip(data.class_names, weights, strict=False))
        )
    task = plugins.tasks.get(prepared.config.task)
    loss = build_loss(
        prepared.loss,
        plugins.losses,
        task=task.targets,
        num_classes=prepared.num_classes,
        class_weights=weights,
        ignore_index=task.ignore_index,
        label_smoothing=prepared.config.label_smoothing,
    )
    return loss, note
