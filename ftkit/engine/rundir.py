"""The run directory: config.toml, plan.json, metrics.jsonl (a row per epoch),
summary.json (written once the run finished), checkpoints/{last.pt,
best.safetensors} and tb/. Under torchrun only rank 0 writes.

Two lifecycle plugins write into it during a run: ``MetricsFile`` (first
after each epoch) and ``Checkpoints`` (last after each epoch, so ``last``
holds the state every other hook left; a row in metrics.jsonl is never
behind its checkpoint, and a resume drops rows ahead of it).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftkit.config import Config
from ftkit.data import fingerprint, is_folder
from ftkit.data.folders import SPLIT_FILE
from ftkit.engine import checkpoint as ckpt
from ftkit.engine import lock
from ftkit.engine.console import Console
from ftkit.engine.summary import json_text
from ftkit.errors import UsageError
from ftkit.plugins.manager import hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from ftkit.engine.guards import Stoppers
    from ftkit.engine.lifecycle import Run
    from ftkit.engine.record import EpochRecord, Summary


@dataclass(frozen=True)
class RunDir:
    path: Path
    main: bool = True  # False on every rank but 0: those read, never write

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / ckpt.LAST

    @property
    def best(self) -> Path:
        return self.path / "checkpoints" / ckpt.BEST

    @property
    def start(self) -> Path:
        """The weights the run started from: pretrained, a --from baseline or random."""
        return self.path / "checkpoints" / ckpt.START

    def create(
        self, config: Config, plan: dict[str, Any], split: dict[str, Any] | None = None
    ) -> None:
        """``split``: the files of each split (``split.json``), for a folder's data."""
        existed = self.path.exists()
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        lock.acquire(self.path)  # first: a run that loses the race must not touch it
        # a run that fails before its first checkpoint removes what it made here
        UNSAVED[:] = [(self.path, existed)]
        # walked once per run: the checkpoints' copy of the config goes without it
        seen = fingerprint(config.data) if is_folder(config.data) else None
        (self.path / "config.toml").write_text(config.to_toml(seen))
        (self.path / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
        if split is not None:
            (self.path / SPLIT_FILE).write_text(json.dumps(split, indent=1) + "\n")

    def append(self, record: dict[str, Any]) -> None:
        if self.main:
            append_jsonl(self.metrics, record)

    def keep_rows_up_to(self, epoch: int) -> None:
        """Drop the metrics rows an interrupted run wrote after its checkpoint."""
        if not self.main or not self.metrics.exists():
            return
        rows = [
            line
            for line in self.metrics.read_text().splitlines(keepends=True)
            if line.endswith("\n") and line.strip() and json.loads(line)["epoch"] <= epoch
        ]
        self.metrics.write_text("".join(rows))

    def save(self, state: dict[str, Any]) -> None:
        """``last.pt``."""
        if not self.main:
            return
        # Written in the training thread: on a 2-core CPU a background writer
        # competed with training and measured slower (docs/performance.md).
        ckpt.save_state(self.last, state)

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.main:
            (self.path / "summary.json").write_text(json_text(summary, indent=2) + "\n")


class MetricsFile:
    """metrics.jsonl, a row per epoch, and summary.json once the run finished."""

    def __init__(self, out: RunDir) -> None:
        self.out = out

    @hookimpl(tryfirst=True)
    def ftkit_epoch_end(self, record: EpochRecord) -> None:
        self.out.append(record.to_json())

    @hookimpl(tryfirst=True)
    def ftkit_run_end(self, summary: Summary) -> None:
        if summary.finished:  # summary.json marks a finished run: resumable ones have none
            self.out.write_summary(summary.to_json())


class Checkpoints:
    """``last`` after every ``every``-th trained epoch and when the run
    stops, ``best`` whenever the stoppers saw the monitored metric improve."""

    def __init__(
        self,
        out: RunDir,
        state: Callable[[], dict[str, Any]],
        weights: Callable[[], dict[str, torch.Tensor]],
        stoppers: Stoppers,
        every: int = 1,
    ) -> None:
        self.out, self.state, self.weights, self.stoppers = out, state, weights, stoppers
        self.every, self.behind = every, False  # behind: epochs done since `last`

    @hookimpl(trylast=True)
    def ftkit_epoch_end(self, run: Run, record: EpochRecord) -> None:
        if not record.trained:
            return
        if self.stoppers.improved and self.out.main:
            ckpt.save_weights(self.out.best, self.weights())
        if record.epoch % self.every == 0 or record.epoch == run.plan.epochs:
            self.save()
        else:
            self.behind = True

    @hookimpl(trylast=True)
    def ftkit_run_end(self, summary: Summary) -> None:
        if self.behind and summary.finished:  # stopped early between two saves
            self.save()

    def save(self) -> None:
        if self.out.main:  # other ranks hold the same weights: only rank 0 builds and writes
            self.out.save(self.state())
        self.behind = False


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    # One write of a whole line: a crash mid-line leaves a last line without its
    # newline, which a resume drops (keep_rows_up_to).
    try:
        with open(path, "a") as fh:
            fh.write(json_text(record) + "\n")
    except OSError as exc:
        raise ckpt.write_error(path, exc) from None


def choose(config: Config) -> Path:
    """``--out``, which must be new or empty, or a fresh ``runs/STAMP-STRATEGY``."""
    if config.out:
        path = Path(config.out)
        if (path / "config.toml").is_file() and not (path / "checkpoints" / ckpt.LAST).exists():
            raise UsageError(
                f"--out '{path}' holds a run that stopped before its first checkpoint, "
                f"so there is nothing to resume; delete it or choose another --out"
            )
        if path.is_dir():
            lock.acquire(path)  # another run writing there is named, with its pid
        if path.exists() and (
            not path.is_dir() or any(p.name != lock.NAME for p in path.iterdir())
        ):
            raise UsageError(
                f"--out '{path}' already exists and is not empty; use --resume "
                f"{path} to continue it, or choose another --out"
            )
        return path
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{stamp}-{config.strategy}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path("runs") / f"{stamp}-{config.strategy}-{suffix}"
    return path


# The run directory this process made, and whether it was there (empty) before:
# a run that fails before its first checkpoint has nothing to resume, so it must
# not leave a directory that blocks the same command until deleted by hand.
UNSAVED: list[tuple[Path, bool]] = []


def discard_unsaved_run(console: Console) -> None:
    for run_dir, existed in UNSAVED:
        kept = (run_dir / "checkpoints" / ckpt.LAST, run_dir / "summary.json")
        if any(path.exists() for path in kept) or _has_rows(run_dir / "metrics.jsonl"):
            continue  # trained epochs (before a first `last` with --save-every) are kept
        # an --out directory the user made was empty: everything in it is this run's
        for path in run_dir.iterdir() if existed else [run_dir]:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        console.warn(f"removed {run_dir}: the run failed before its first checkpoint")
    UNSAVED.clear()


def _has_rows(metrics: Path) -> bool:
    return metrics.is_file() and metrics.stat().st_size > 0
