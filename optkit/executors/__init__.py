"""Where variants run. An executor takes Work (a job, where its VariantResult and log go, its key on the live board)
and yields (work, candidate) as each finishes, with the candidate written atomically to work.out and the log
to work.log; the pipeline does the rest (order, resume, report), the same for every executor.

`local` (local.py): one variant after another on this machine. `ray` (ray.py, the `ray` extra): variants
spread over a Ray cluster, each a Ray task running the same worker. Importing this package stays cheap: no
executor's libraries are imported before one is created."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optkit.live import Board
    from optkit.recipe import ExecutorSpec
    from optkit.results import VariantResult
    from optkit.worker import VariantJob


@dataclass
class Work:
    job: VariantJob
    out: Path
    log: Path
    key: str  # the variant's name, or "<baseline>@<hardware class>" for a baseline benchmarked on more hardware
    nodes: list[str] | None = None  # Ray node ids to run on (any one): the baseline for their hardware class


def again(cand: VariantResult, attempt: int, retries: int) -> bool:
    """Retry only what a retry can fix: the worker or its node died. An error or a timeout would repeat."""
    return cand.crashed and attempt <= retries


def create(spec: ExecutorSpec):
    """The executor for spec; a missing library or an unreachable address is BadInput here, before any work."""
    if spec.kind == "ray":
        from optkit.executors.ray import RayExecutor

        return RayExecutor(spec)
    from optkit.executors.local import LocalExecutor

    return LocalExecutor(spec.retries)


def run_all(executor, works: list[Work], board: Board):
    """executor.run, with the board told how each work ended."""
    for work, cand in executor.run(works, board):
        board.update(work.key, state=cand.status)
        yield work, cand
