"""Progress of long work, as marker lines in the worker's log: `phase` says what a variant is doing (building,
evaluating, benchmarking), `Counter` counts a long step (sensitivity ranking, calibration passes, lm-eval
scoring). Executors read the markers back (`parse`) to keep a live line per variant on the terminal; the log
keeps them as plain text."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

MARK = "[optkit]"
EVERY_S = 2.0  # at most one counter line per this many seconds (and the last one always)


def _emit(text: str) -> None:
    print(f"{MARK} {text}", file=sys.stderr, flush=True)


def phase(name: str, detail: str = "") -> None:
    _emit(f"phase {name}" + (f": {detail}" if detail else ""))


def note(text: str) -> None:
    """One uncounted step of a long job ("onnx.export: exporting with torch.onnx")."""
    _emit(f"progress {text}")


class Counter:
    """`with Counter("sensitivity ranking", total=105) as c: ... c.advance()` -> throttled lines
    "[optkit] progress sensitivity ranking 12/105 (34 s)"."""

    def __init__(self, what: str, total: int | None = None):
        self.what, self.total, self.done = what, total, 0
        self.started = self.last = time.perf_counter()

    def __enter__(self) -> Counter:
        self._line()
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        if time.perf_counter() - self.last >= EVERY_S or (self.total is not None and self.done >= self.total):
            self._line()

    def _line(self) -> None:
        self.last = time.perf_counter()
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        _emit(f"progress {self.what} {count} ({self.last - self.started:.0f} s)")

    def __exit__(self, *exc) -> bool:
        if self.total is None or self.done < self.total:
            self._line()
        return False


def parse(line: str) -> tuple[str, str] | None:
    """A marker line -> (kind, text): ("phase", "evaluating") or ("progress", "lm-eval arc_easy 40/200 (12 s)")."""
    if not line.startswith(MARK + " "):
        return None
    kind, _, text = line[len(MARK) + 1:].strip().partition(" ")
    return (kind, text) if kind in ("phase", "progress") else None


@contextmanager
def watching(log: Path, on_marker: Callable[[str, str], None], every_s: float = 0.25):
    """While the block runs, a thread reads the marker lines `log` gains and calls on_marker(kind, text); the
    lines written last are read after the block, so none is missed. The log may not exist yet; remove an old
    one first, or its markers are read too."""
    stop = threading.Event()
    state = {"pos": 0, "rest": ""}

    def poll() -> None:
        try:
            with open(log, "rb") as fh:
                if os.fstat(fh.fileno()).st_size < state["pos"]:  # truncated: written again from the start
                    state["pos"], state["rest"] = 0, ""
                fh.seek(state["pos"])
                chunk = fh.read().decode(errors="replace")
                state["pos"] = fh.tell()
        except OSError:
            return
        *lines, state["rest"] = (state["rest"] + chunk).split("\n")
        for line in lines:
            marker = parse(line)
            if marker:
                on_marker(*marker)

    def loop() -> None:
        while not stop.wait(every_s):
            poll()

    thread = threading.Thread(target=loop, name=f"watch {Path(log).name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        poll()
        state["rest"] += "\n"
        poll()
