"""The contract every executor implements (local.py, ray.py, or a plugin's): where variants run, nothing about
what is measured. The pipeline orders the jobs, skips finished ones and writes the report, the same for every
executor; an executor only runs placed jobs (VariantJob.placement) and yields each result as it exists."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING

from optkit.job import VariantJob
from optkit.results import VariantResult

if TYPE_CHECKING:
    from optkit.live import Board


class Executor(ABC):
    """Runs jobs somewhere; a context manager that closes itself (`with executors.create(spec) as ex:`)."""

    name: str = ""  # the recipe's executor.kind

    def device(self, wanted: str) -> str:
        """`auto` / `cuda` / `cpu` settled against the machines this executor will use; BadInput if it cannot."""
        from optkit import preflight

        return preflight.resolve_device(wanted)

    @abstractmethod
    def run(self, jobs: list[VariantJob], board: Board) -> Iterator[tuple[VariantJob, VariantResult]]:
        """Run every job (each has a placement), yielding (job, result) as each finishes, in any order, with the
        result already written atomically to job.where.out and the worker's log at job.where.log. Progress goes
        to `board.update(key, state=..., node=...)` and `board.marker`; a job whose worker died may be retried
        (see `again`); a job this executor cannot place (job.where.nodes on another kind of machine) may be
        left out."""

    def close(self) -> None:  # noqa: B027 (optional: most executors hold nothing)
        """Let go of what the executor holds (a cluster connection it opened). Called once, at the end."""

    def run_all(self, jobs: list[VariantJob], board: Board) -> Iterator[tuple[VariantJob, VariantResult]]:
        """run, with the board told how each job ended."""
        for job, result in self.run(jobs, board):
            board.update(job.where.key, state=result.status)
            yield job, result

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def again(result: VariantResult, attempt: int, retries: int) -> bool:
    """Retry only what a retry can fix: the worker or its node died. An error or a timeout would repeat."""
    return result.crashed and attempt <= retries
