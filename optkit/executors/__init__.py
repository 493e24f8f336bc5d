"""Where variants run. An executor (base.Executor) takes placed VariantJobs (job.placement: where its
VariantResult and log go, its key on the live board) and yields (job, result) as each finishes, with the result
written atomically to its placement's out and the log to its log; the pipeline does the rest (order, resume,
report), the same for every executor.

`local` (local.py): one variant after another on this machine. `ray` (ray.py, the `ray` extra): variants
spread over a Ray cluster, each a Ray task running the same worker. Importing this package stays cheap: no
executor's libraries are imported before one is created."""

from __future__ import annotations

from typing import TYPE_CHECKING

from optkit.executors.base import Executor, again

if TYPE_CHECKING:
    from optkit.recipe import ExecutorSpec

__all__ = ["Executor", "again", "create"]


def create(spec: ExecutorSpec) -> Executor:
    """The executor for spec; a missing library or an unreachable address is BadInput here, before any work."""
    if spec.kind == "ray":
        from optkit.executors.ray import RayExecutor  # the ray extra: imported only when asked for

        return RayExecutor(spec)
    from optkit.executors.local import LocalExecutor

    return LocalExecutor(spec.retries)
