"""The run directory: config.toml, plan.json, split.json, metrics.jsonl (a
row per epoch), summary.json (written once the run finished),
checkpoints/{start.safetensors,last.pt,best.safetensors} and tb/. Under
torchrun only rank 0 writes.

``Session`` writes an epoch's row before anything else hears of the epoch,
and its checkpoint after everything else (``checkpoints.py``): a row in
metrics.jsonl is never behind its checkpoint, and a resume drops rows ahead
of it. ``Unsaved`` remembers the directory a run made until its first
checkpoint, so a run that fails before it leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ftkit.checkpoint as ckpt
from ftkit.config import Config
from ftkit.data.folders import SPLIT_FILE
from ftkit.data.load import fingerprint, is_folder
from ftkit.engine.console import Console
from ftkit.engine.rundir import lock
from ftkit.engine.summary import json_text
from ftkit.errors import UsageError

if TYPE_CHECKING:
    pass


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
        self,
        config: Config,
        plan: dict[str, Any],
        split: dict[str, Any] | None,
        unsaved: Unsaved,
    ) -> None:
        """``split``: the files of each split (``split.json``), for a folder's data."""
        existed = self.path.exists()
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        lock.acquire(self.path)  # first: a run that loses the race must not touch it
        # a run that fails before its first checkpoint removes what it made here
        unsaved.made(self.path, existed)
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
        ckpt.save_state(self.last, state)

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.main:
            (self.path / "summary.json").write_text(json_text(summary, indent=2) + "\n")


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


@dataclass
class Unsaved:
    """The run directory this run made, and whether it was there (empty)
    before: a run that fails before its first checkpoint has nothing to
    resume, so it must not leave a directory that blocks the same command
    until deleted by hand."""

    run: tuple[Path, bool] | None = None

    def made(self, run_dir: Path, existed: bool) -> None:
        self.run = (run_dir, existed)

    def discard(self, console: Console) -> None:
        if self.run is None:
            return
        (run_dir, existed), self.run = self.run, None
        kept = (run_dir / "checkpoints" / ckpt.LAST, run_dir / "summary.json")
        if any(path.exists() for path in kept) or _has_rows(run_dir / "metrics.jsonl"):
            return  # trained epochs (before a first `last` with --save-every) are kept
        # an --out directory the user made was empty: everything in it is this run's
        for path in run_dir.iterdir() if existed else [run_dir]:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        console.warn(f"removed {run_dir}: the run failed before its first checkpoint")


def _has_rows(metrics: Path) -> bool:
    return metrics.is_file() and metrics.stat().st_size > 0
