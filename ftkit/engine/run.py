"""``ftkit run``: open the world (one process or torchrun's ranks), reopen
the run to resume if asked, run a ``Session``: ``execute`` says how it ended
(``ftkit.run`` returns that), ``start`` turns it into the exit code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ftkit.config import Config
from ftkit.engine.console import Console
from ftkit.engine.rundir import lock
from ftkit.engine.rundir.layout import Unsaved
from ftkit.engine.rundir.resume import open_resume
from ftkit.engine.session import Session
from ftkit.engine.train import distributed
from ftkit.plugins.manager import Plugins
from ftkit.plugins.records import Summary

__all__ = ["Outcome", "execute", "start"]

EXIT_OK, EXIT_GUARD, EXIT_INTERRUPTED = 0, 3, 130
GUARD_STOPS = ("baseline-guard", "non-finite")


@dataclass(frozen=True)
class Outcome:
    """How a run ended. ``summary`` is None when there was nothing to run
    (``--resume`` of a run that had finished)."""

    stop_reason: str
    dir: Path
    summary: Summary | None

    @property
    def exit_code(self) -> int:
        if self.stop_reason == "interrupted":
            return EXIT_INTERRUPTED
        return EXIT_GUARD if self.stop_reason in GUARD_STOPS else EXIT_OK


def start(config: Config, plugins: Plugins, resume: str | None = None) -> int:
    return execute(config, plugins, resume).exit_code


def execute(config: Config, plugins: Plugins, resume: str | None = None) -> Outcome:
    world, device = distributed.setup(config.device)
    console = Console(main=world.main)  # known before --resume speaks: rank 0 only
    finished = False
    try:
        run_dir, saved = None, None
        if resume:
            opened = open_resume(resume, config, console, plugins.option_list())
            if opened is None:
                return Outcome("completed", Path(resume), None)
            run_dir, saved = opened
        unsaved = Unsaved()
        try:
            session = Session(config, plugins, world, device, console, saved, run_dir, unsaved)
            reason = session.run()
        except BaseException:
            unsaved.discard(console)
            raise
        finished = True
    finally:
        lock.release_all()
        distributed.shutdown(world, finished)
    return Outcome(reason, session.out.path, session.summary)
