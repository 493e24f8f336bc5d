"""Process isolation and nothing else: run a Python module in a fresh process with its output in a log,
a timeout, and death with the parent (so no orphan keeps the CPU busy). What the process computes is the
caller's business (worker.py for variants)."""

from __future__ import annotations

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


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL when its parent dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_module(module: str, args: list[str], log: Path, timeout: float | None = None,
               env: dict | None = None, python: str | None = None, append: bool = False) -> Outcome:
    """`python -m module args...` with stdout and stderr into log (added to it with append); killed after timeout
    seconds. python: another interpreter than this one (an engine's own environment, envs.py)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "a" if append else "w") as log_fh:
        proc = subprocess.Popen([python or sys.executable, "-m", module, *args], stdout=log_fh,
                                stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            code, timed_out = proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            proc.kill()
            code, timed_out = proc.wait(), True
    return Outcome(code, time.perf_counter() - started, timed_out)


def last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
