"""Guards that watch the steps of an epoch: the gradient norm, and non-finite
steps (skipped; too many in a row stop the run). What decides after an epoch
is ``engine/stoppers.py``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GradNormAlert:
    """Warn once when the gradient norm stays above ``limit`` for ``window``
    steps in a row (seed 004: keep it under 10)."""

    limit: float
    window: int = 20
    streak: int = 0
    alerted: bool = False
    clip: float | None = None  # --clip-grad-norm: the norm watched is measured before it

    def update(self, norm: float) -> str | None:
        """One step's norm."""
        self.streak = self.streak + 1 if norm > self.limit else 0
        return self.observe(self.streak, self.streak, norm)

    def observe(self, streak: int, longest: int, norm: float) -> str | None:
        """A read of the device's tally (``engine/train/tally.py``): the streak now,
        the longest since the previous read, the last norm."""
        self.streak = streak
        if longest >= self.window and not self.alerted:
            self.alerted = True
            head = (
                f"gradient norm above {self.limit:g} for {longest} steps in a row (now {norm:.3g}"
            )
            if self.clip is None:
                return f"{head}): the LR may be too high; consider --clip-grad-norm"
            return (
                f"{head}, measured before clipping to {self.clip:g}): every step is being "
                "clipped, so the LR may be too high; consider a lower --lr"
            )
        return None


@dataclass
class NonFinite:
    """Skipped steps: ``limit`` in a row stops the run. The streak is counted on
    the device and brought here at each read (``engine/train/tally.py``)."""

    limit: int
    streak: int = 0
    total: int = 0
