"""``ftkit run``: open the world (one process or torchrun's ranks), reopen
the run to resume if asked, run a ``Session``, and turn how it ended into
the exit code."""

from __future__ import annotations

from ftkit.config import Config
from ftkit.engine import distributed, lock, rundir
from ftkit.engine.console import Console
from ftkit.engine.lifecycle import Run
from ftkit.engine.resume import open_resume
from ftkit.engine.session import Session
from ftkit.plugins.manager import Plugins

__all__ = ["Run", "start"]

EXIT_OK, EXIT_GUARD, EXIT_INTERRUPTED = 0, 3, 130
GUARD_STOPS = ("baseline-guard", "non-finite")


def start(config: Config, plugins: Plugins, resume: str | None = None) -> int:
    world, device = distributed.setup(config.device)
    console = Console(main=world.main)  # known before --resume speaks: rank 0 only
    finished = False
    try:
        run_dir, saved = None, None
        if resume:
            opened = open_resume(resume, config, console)
            if opened is None:
                return EXIT_OK
            run_dir, saved = opened
        rundir.UNSAVED.clear()
        try:
            reason = Session(config, plugins, world, device, console, saved, run_dir).run()
        except BaseException:
            rundir.discard_unsaved_run(console)
            raise
        finished = True
    finally:
        lock.release_all()
        distributed.shutdown(world, finished)
    if reason == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_GUARD if reason in GUARD_STOPS else EXIT_OK
