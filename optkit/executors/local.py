"""The local executor: one variant after another on this machine, each in a fresh worker process (forked from a
server that imported torch and transformers once, warm.py), its log watched for progress markers while it runs."""

from __future__ import annotations

import socket
from collections.abc import Iterator

from optkit import progress
from optkit.executors.base import Executor, again
from optkit.job import VariantJob, run_job
from optkit.results import VariantResult, write_model


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, retries: int = 0):
        self.retries = retries

    def run(self, jobs: list[VariantJob], board) -> Iterator[tuple[VariantJob, VariantResult]]:
        host = socket.gethostname()
        for job in jobs:
            where = job.where
            if where.nodes is not None:  # a baseline for other hardware: this machine is one class, not that one
                continue
            attempt = 0
            while True:
                attempt += 1
                board.update(where.key, state="starting", node=host)
                where.log.unlink(missing_ok=True)  # else the watcher would read the last run's markers
                with progress.watching(where.log, lambda kind, text, key=where.key: board.marker(key, kind, text)):
                    result = run_job(job, where.out, where.log, warm=True)
                result.attempts = attempt
                if not again(result, attempt, self.retries):
                    break
                board.say(f"{where.key}: {result.error}; trying again")
            write_model(where.out, result)
            yield job, result
