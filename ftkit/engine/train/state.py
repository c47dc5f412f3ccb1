"""What a resume needs besides the run's config: ``RunState``, the model,
the loop (optimizer, scaler, guards, the epoch in progress) and every RNG.
All of it goes into ``checkpoints/last.pt``, so a resumed run continues
exactly where the checkpoint was written."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ftkit.config import Config
from ftkit.engine.train.loop import Loop
from ftkit.engine.train.staging import apply_stage
from ftkit.plan.stages import Plan
from ftkit.version import __version__


@dataclass
class RunState:
    """Everything besides weights and optimizer that a resume needs."""

    epoch: int = 0  # last completed epoch
    stage_index: int = -1
    stage_step: int = 0  # optimizer steps into the current stage
    stopper: dict[str, Any] = field(default_factory=dict)
    guard: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    last: dict[str, Any] | None = None


def checkpoint(
    state: RunState, model: torch.nn.Module, loop: Loop, config: Config
) -> dict[str, Any]:
    """The content of ``last.pt``."""
    return {
        "model": model.state_dict(),
        "loop": loop.state_dict(),
        "run": asdict(state),
        "rng": rng_state(),
        "config": config.to_toml(),
        "versions": {"ftkit": __version__, "torch": str(torch.__version__)},
        "threads": torch.get_num_threads(),
    }


def restore(saved: dict[str, Any], model: torch.nn.Module, loop: Loop, plan: Plan) -> RunState:
    """Load ``last.pt`` into the model and loop; the run's state."""
    state = RunState(**saved["run"])
    model.load_state_dict(saved["model"])
    if state.stage_index >= 0:
        # The optimizer's groups must be those of the stage before its state loads.
        apply_stage(model, loop.optimizer, plan.stages[state.stage_index])
        loop.wrap()
    loop.load_state_dict(saved["loop"])
    return state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": pos,
        "numpy_gauss": [has_gauss, gauss],
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate((3, tuple(rng["python"]), None))
    np.random.set_state(
        ("MT19937", rng["numpy"].numpy().astype(np.uint32), rng["numpy_pos"], *rng["numpy_gauss"])
    )
