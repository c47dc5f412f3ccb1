"""What a run prints. Under torchrun every rank runs the same code, so one
process (rank 0) speaks for the run; the others keep quiet."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Console:
    main: bool = True  # False on every rank but 0

    def say(self, message: str) -> None:
        if self.main:
            print(message, flush=True)

    def warn(self, message: str) -> None:
        if self.main:
            print(f"ftkit: warning: {message}", file=sys.stderr, flush=True)
