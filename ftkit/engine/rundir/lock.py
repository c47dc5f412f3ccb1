"""One ftkit process writes a run directory at a time.

``RUN_DIR/.lock`` is held with ``flock`` for as long as a run writes there
and holds the writer's pid. The kernel drops the lock when the process ends,
however it ends (SIGKILL included), so a lock never outlives its holder;
the file a killed process leaves behind is harmless, and a run that ends
removes its own. POSIX only: on Windows there is no ``fcntl``,
and runs are not locked (docs/guarantees.md says so).
"""

from __future__ import annotations

import os
from pathlib import Path

from ftkit.errors import UsageError

NAME = ".lock"
_held: dict[Path, int] = {}  # run directory -> the open, locked file


def acquire(run_dir: Path) -> None:
    """Lock ``run_dir`` for this process, or say who holds it (exit 2)."""
    try:
        import fcntl
    except ImportError:  # Windows
        return
    run_dir = run_dir.resolve()
    path = run_dir / NAME
    while run_dir not in _held:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot lock '{run_dir}' for writing: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(
                f"'{run_dir}' is being written by another ftkit run (pid {holder}); "
                "wait for it to finish, or choose another --out"
            ) from None
        if not path.exists() or os.stat(path).st_ino != os.fstat(fd).st_ino:
            os.close(fd)  # its holder removed it as we opened it: lock the new one
            continue
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        _held[run_dir] = fd


def release_all() -> None:
    """Unlock and remove the lock files this process holds: a finished run
    directory holds only the run. A killed process leaves its file, unlocked."""
    for run_dir, fd in _held.items():
        (run_dir / NAME).unlink(missing_ok=True)
        os.close(fd)
    _held.clear()
