"""``ftkit run``: open the world (one process or torchrun's ranks), reopen
the run to resume if asked, run a ``Session``, and turn how it ended into
the exit code."""

from __future__ import annotations

from ftkit.config import Config
from ftkit.engine.console import Console
from ftkit.engine.rundir import lock
from ftkit.engine.rundir.layout import Unsaved
from ftkit.engine.rundir.resume import open_resume
from ftkit.engine.session import Session
from ftkit.engine.train import distributed
from ftkit.plugins.manager import Plugins

__all__ = ["start"]

EXIT_OK, EXIT_GUARD, EXIT_INTERRUPTED = 0, 3, 130
GUARD_STOPS = ("baseline-guard", "non-finite")


def start(config: Config, plugins: Plugins, resume: str | None = None) -> int:
    world, device = distributed.setup(config.device)
    console = Console(main=world.main)  # known before --resume speaks: rank 0 only
    finished = False
    try:
        run_dir, saved = None, None
        if resume:
            opened = open_resume(resume, config, console, plugins.option_list())
            if opened is None:
                return EXIT_OK
            run_dir, saved = opened
        unsaved = Unsaved()
        try:
            reason = Session(config, plugins, world, device, console, saved, run_dir, unsaved).run()
        except BaseException:
            unsaved.discard(console)
            raise
        finished = True
    finally:
        lock.release_all()
        distributed.shutdown(world, finished)
    if reason == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_GUARD if reason in GUARD_STOPS else EXIT_OK
