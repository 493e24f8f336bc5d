"""One writer per run folder: the orchestrator holds an exclusive flock on <run>/.optkit.lock for the whole run.
The kernel drops a flock when its process dies, however it dies (kill -9 included), so a lock is never stale:
a second run is refused with one line naming the folder and the pid holding it, and a rerun after a crash just
takes it."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from optkit.errors import BadInput

NAME = ".optkit.lock"


def prepare(run_dir: Path) -> None:
    """The run folder, created; BadInput when the path is a file, too long or not writable."""
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise BadInput(f"run folder {run_dir} is an existing file; pass a folder with --out (or remove the file)")
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = {errno.ENAMETOOLONG: "its name is too long for the file system",
               errno.EACCES: "permission denied", errno.EROFS: "the file system is read-only",
               errno.ENOTDIR: "a part of its path is a file"}.get(exc.errno, exc.strerror or str(exc))
        raise BadInput(f"cannot create run folder {run_dir}: {why}; pass another --out") from None


@contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock for the block; BadInput (exit 2) when another process holds it."""
    prepare(run_dir)
    fh = open(run_dir / NAME, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "unknown"
        fh.close()
        raise BadInput(f"run folder {run_dir} is in use by another optkit run (pid {pid}); wait for it to finish, "
                       "or pass another --out") from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()  # releases the lock; the file stays (removing it would race with a run opening it)
