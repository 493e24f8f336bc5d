"""The local executor: one variant after another on this machine, each in a fresh worker process, its log
watched for progress markers while it runs."""

from __future__ import annotations

import socket
from collections.abc import Iterator

from optkit import preflight, progress
from optkit.executors import Work, again
from optkit.results import VariantResult, write_model
from optkit.worker import run_job


class LocalExecutor:
    def __init__(self, retries: int = 0):
        self.retries = retries

    def device(self, wanted: str) -> str:
        return preflight.resolve_device(wanted)

    def run(self, works: list[Work], board) -> Iterator[tuple[Work, VariantResult]]:
        host = socket.gethostname()
        for work in works:
            if work.nodes is not None:  # a baseline for other hardware: this machine is one class, not that one
                continue
            attempt = 0
            while True:
                attempt += 1
                board.update(work.key, state="starting", node=host)
                work.log.unlink(missing_ok=True)  # else the watcher would read the last run's markers
                with progress.watching(work.log, lambda kind, text, key=work.key: board.marker(key, kind, text)):
                    cand = run_job(work.job, work.out, work.log)
                cand.attempts = attempt
                if not again(cand, attempt, self.retries):
                    break
                board.say(f"{work.key}: {cand.error}; trying again")
            write_model(work.out, cand)
            yield work, cand

    def close(self) -> None:
        pass
