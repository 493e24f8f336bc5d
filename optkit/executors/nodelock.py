"""A benchmark has its node to itself: on a CPU node, building and evaluating share the node (a shared flock),
a benchmark takes it exclusively, and a gate lock taken first keeps new builds from starting while a benchmark
waits (so a busy node cannot starve it). Plain flock on node-local files: the kernel drops a lock when its
process dies (SIGKILL, out of memory), so a crashed variant never leaves a node locked.

The executor names the lock files through OPTKIT_NODE_LOCK (a path prefix, one per node); unset, as under the
local executor, nothing is locked."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

ENV = "OPTKIT_NODE_LOCK"
THREADS_ENV = "OPTKIT_BENCH_THREADS"  # the node's CPUs: a benchmark that has the node uses them all


def prefix(node_id: str) -> str:
    """The lock files of one node. The node id is in the name because test clusters run several Ray nodes on
    one host, and so in one /tmp."""
    folder = Path(tempfile.gettempdir()) / "optkit-node-locks"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / node_id)


@contextmanager
def _flock(path: str, kind: int, on_wait: Callable[[], None] | None):
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(fh, kind)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def shared(on_wait: Callable[[], None] | None = None):
    """Building and evaluating: alongside others, never alongside a benchmark."""
    base = os.environ.get(ENV)
    if not base:
        yield
        return
    with _flock(base + ".gate", fcntl.LOCK_EX, on_wait):
        fh = open(base + ".work", "a")
        fcntl.flock(fh, fcntl.LOCK_SH)  # never waits long: a benchmark holds the gate while it holds this
    try:
        yield
    finally:
        fh.close()  # closing releases the lock


@contextmanager
def exclusive(on_wait: Callable[[], None] | None = None):
    """A benchmark: the node alone. Yields the threads it should use (the node's CPUs), or None when unlocked."""
    base = os.environ.get(ENV)
    if not base:
        yield None
        return
    with _flock(base + ".gate", fcntl.LOCK_EX, on_wait), _flock(base + ".work", fcntl.LOCK_EX, on_wait):
        threads = os.environ.get(THREADS_ENV, "")
        yield int(threads) if threads.isdigit() and int(threads) > 0 else None
