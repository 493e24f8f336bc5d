"""The live view of a run: one line per variant (queued, building, evaluating, waiting, benchmarking, ok or
failed; the node it runs on; its latest progress count; the time it has left) and a last line with the run's
(eta.py). On a terminal the lines are redrawn in place under the messages; anywhere else (CI logs, tests) each
new phase is one plain "[i/N] name: phase" line instead, with the run's time left."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from optkit.eta import Eta, clock_text

FINAL = ("ok", "failed", "skipped")
QUIET = ("queued", "starting", *FINAL)  # no plain line: the pipeline says how each variant ended


@dataclass
class _Line:
    label: str
    state: str = "queued"
    node: str = ""
    detail: str = ""
    started: float | None = None
    ended: float | None = None

    def text(self, now: float, width: int = 0, left: float | None = None) -> str:
        secs = ((self.ended or now) - self.started) if self.started else None
        clock = "" if secs is None else clock_text(secs)
        clock += f" (~{clock_text(left)} left)" if left is not None and self.ended is None else ""
        node = f"on {self.node}" if self.node else ""
        return f"{self.label:<{width}}  {self.state:<12} {clock:>6}  {node}  {self.detail}".rstrip()


class Board:
    """Executors call update() and marker(); the pipeline calls say() for messages and close() at the end.
    Thread-safe: the local executor's log watcher updates it from its own thread. eta: the run's clock of what is
    left (guesses from the forecast; without one, the finished variants' times alone)."""

    def __init__(self, labels: dict[str, str], say: Callable[[str], None], live: bool = False, stream=None,
                 eta: Eta | None = None):
        self.lines = {key: _Line(label) for key, label in labels.items()}
        self.eta = eta or Eta()
        for key in labels:
            self.eta.add(key)
        self._say, self.live, self._lock, self._drawn = say, live, threading.RLock(), 0
        self._stream = stream
        self._stop = threading.Event()
        if live:
            if stream is None:
                import click

                self._stream = click.get_text_stream("stderr")
            self._ticker = threading.Thread(target=self._tick, name="board", daemon=True)
            self._ticker.start()

    def add(self, key: str, label: str) -> None:
        with self._lock:
            self.lines[key] = _Line(label)
            self.eta.add(key)

    def update(self, key: str, state: str | None = None, node: str | None = None, detail: str | None = None) -> None:
        with self._lock:
            line = self.lines[key]
            new_state = state is not None and state != line.state
            if new_state:
                line.state, line.detail = state, ""
                line.started = line.started or time.time()
                line.ended = time.time() if state in FINAL else None
                if state in FINAL:
                    self.eta.finish(key, ok=state == "ok")
                elif state != "queued":
                    self.eta.start(key)
            line.node = node if node is not None else line.node
            line.detail = detail if detail is not None else line.detail
            if self.live:
                self._draw()
            elif new_state and state not in QUIET:
                self._say(f"{line.label}: {state}" + (f" on {line.node}" if line.node else "")
                          + (f" ({line.detail})" if line.detail else "") + self.left())

    def marker(self, key: str, kind: str, text: str) -> None:
        """A progress marker from the worker's log: "phase evaluating" or "progress <what> <n>/<total> (<s> s)"."""
        if kind == "phase":
            name, _, detail = text.partition(":")
            self.update(key, state=name.strip(), detail=detail.strip())
        else:
            self.update(key, detail=text)

    def left(self) -> str:
        """" · about 1:20 left" for the end of a progress line, or "" when nothing tells."""
        text = self.eta.text()
        return f" · {text}" if text else ""

    def say(self, text: str) -> None:
        with self._lock:
            if not self.live:
                self._say(text)
                return
            self._clear()
            self._stream.write(text + "\n")
            self._draw()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self.live:
                self._draw()
                self._drawn = 0  # the last picture stays on the screen

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                if not self._stop.is_set():
                    self._draw()

    def _clear(self) -> None:
        if self._drawn:
            self._stream.write(f"\x1b[{self._drawn}A\r\x1b[J")  # up to the first line, erase to the end
            self._drawn = 0

    def _draw(self) -> None:
        size = shutil.get_terminal_size((100, 24))
        lines = list(self.lines.values())
        if len(lines) > size.lines - 2:  # taller than the screen: the running ones and a count of the rest
            running = [ln for ln in lines if ln.state not in FINAL and ln.state != "queued"]
            rest = {s: sum(1 for ln in lines if ln.state == s) for s in ("queued", *FINAL)}
            lines = running[: size.lines - 3]
            summary = ", ".join(f"{n} {s}" for s, n in rest.items() if n)
        else:
            summary = None
        now = time.time()
        width = max((len(ln.label) for ln in lines), default=0)
        keys = {id(ln): k for k, ln in self.lines.items()}
        texts = [ln.text(now, width, self.eta.left(keys[id(ln)]) if ln.started else None)[: size.columns - 1]
                 for ln in lines] + ([summary] if summary else [])
        run = self.eta.text()
        texts += [f"run: {run}"[: size.columns - 1]] if run else []
        self._clear()
        self._stream.write("".join(t + "\n" for t in texts))
        self._stream.flush()
        self._drawn = len(texts)
