"""Process isolation and nothing else: run a Python module in a fresh process (and process group) with its
output in a log, a timeout that kills the whole group, and death with the parent (so no orphan keeps the CPU
busy). What the process computes is the caller's business (worker.py for variants). A warm start forks the
process from a server that has imported the heavy libraries once instead (warm.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Outcome:
    code: int | None  # the exit code (negative: killed by that signal)
    seconds: float
    timed_out: bool = False

    def describe(self, timeout: float | None) -> str:
        if self.timed_out:
            return f"timed out after {timeout:g}s and was killed"
        return f"killed by signal {-self.code}" if self.code is not None and self.code < 0 \
            else f"exited with code {self.code}"


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: the calling process (a preexec_fn: the child) gets `sig` when its parent dies, so nothing it runs
    outlives an orchestrator killed with kill -9."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def orphan_signal() -> None:
    """preexec_fn of run_module's child: SIGTERM when the parent dies, which guard_group turns into the end of the
    child's whole process group (a plain SIGKILL would leave the child's own children running)."""
    die_with_parent(signal.SIGTERM)


def guard_group(poll: float = 0.5) -> None:
    """Called first by a child run_module started (worker.py): when its parent dies (SIGTERM from the kernel, or
    a parent pid that changed, noticed by a thread even while the main thread is busy in a library), SIGKILL its
    whole process group, itself and whatever it started included."""
    import threading

    if os.getpgrp() != os.getpid():  # not the leader of a group of its own: killing "its group" would hit others
        return
    parent = os.getppid()

    def end_group(*_) -> None:
        os.killpg(0, signal.SIGKILL)

    signal.signal(signal.SIGTERM, end_group)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        end_group()

    threading.Thread(target=watch, name="optkit guard", daemon=True).start()
    if os.getppid() != parent or parent == 1:  # orphaned before the guard stood
        end_group()


def kill_group(pgid: int) -> None:
    """SIGKILL to a child's whole process group (the worker and whatever it started: a converter, a quantizer,
    a probe), also after a normal exit, for anything it left running."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is empty already


def run_module(module: str, args: list[str], log: Path, timeout: float | None = None,
               env: dict | None = None, python: str | None = None, append: bool = False,
               warm: tuple[str, ...] = ()) -> Outcome:
    """`python -m module args...` with stdout and stderr into log (added to it with append), in a process group of
    its own; the group is killed after timeout seconds, on Ctrl-C or any other exception here, and when the child
    exits. python: another interpreter than this one (an engine's own environment, envs.py). warm: the libraries
    the module imports; forked from a warm server that has them imported (warm.py) where it can be, else a fresh
    process."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if warm and python is None:
        from optkit import warm as server

        outcome = server.run(module, args, log, timeout, env, append, started, warm)
        if outcome is not None:
            return outcome
    with open(log, "a" if append else "w") as log_fh:
        proc = subprocess.Popen([python or sys.executable, "-m", module, *args], stdout=log_fh,
                                stderr=subprocess.STDOUT, env=env,
                                start_new_session=True,  # its own group: Ctrl-C reaches us, not it
                                preexec_fn=orphan_signal if sys.platform == "linux" else None)
        try:
            code, timed_out = proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            code, timed_out = proc.wait(), True
        except BaseException:  # Ctrl-C, SystemExit (SIGTERM): nothing of the variant lives on
            kill_group(proc.pid)
            proc.wait()
            raise
        kill_group(proc.pid)
    return Outcome(code, time.perf_counter() - started, timed_out)


def last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
