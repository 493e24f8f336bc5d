"""The node's side of the ray executor: one variant as a Ray task (a streaming generator). It runs the same
worker process as the local executor, in a node-local folder, with the threads and the node lock set, and
yields as it goes: the node's facts first (so a crash still says where it happened), then the worker's
progress markers as they reach its log, then the result: the candidate, the log's text and, from the
baseline, its fidelity reference. Nothing here assumes a disk shared with the driver."""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
from pathlib import Path

import ray


def _node_cpus(node_id: str) -> int | None:
    for n in ray.nodes():
        if n["NodeID"] == node_id:
            return int(n["Resources"].get("CPU", 0)) or None
    return None


def _env(forwarded: dict, threads: int, job, node_id: str, cpus: int | None) -> dict:
    from optkit.executors import nodelock

    env = {**forwarded, **os.environ}  # the node's own settings win over the driver's
    env["OMP_NUM_THREADS"] = str(threads)  # explicit: the worker's threads while building and evaluating
    if job.device == "cpu":  # on GPU nodes each variant holds its own GPUs; nothing to lock
        env[nodelock.ENV] = nodelock.prefix(node_id)
        env[nodelock.THREADS_ENV] = str(cpus or os.cpu_count())
    return env


@ray.remote(num_returns="streaming", max_retries=0)
def run_variant(job_json: str, reference: bytes | None, forwarded: dict, version: str, threads: int,
                shown_log: str):
    from optkit import node, progress
    from optkit.checkpoints import ALIASES
    from optkit.job import VariantJob, run_job
    from optkit.results import VariantResult
    from optkit.version import __version__

    node_id = ray.get_runtime_context().get_node_id()
    job = VariantJob.model_validate_json(job_json)
    cpus = _node_cpus(node_id)
    here = node.facts(job.device, cpus=cpus, node_id=node_id)
    yield {"node": here.model_dump()}
    if version != __version__:
        cand = VariantResult(name=job.variant.name, status="failed", node=here, error=f"{here.host} has optkit "
                         f"{__version__} and the driver {version}; install the same optkit on every node")
        yield {"result": cand.model_dump_json(), "log": "", "reference": None}
        return
    if job.checkpoint.given in ALIASES:  # the alias's file as installed on this node, not the driver's path
        from optkit.checkpoints import resolve

        job = job.model_copy(update={"checkpoint": resolve(job.checkpoint.given)})
    folder = Path(tempfile.mkdtemp(prefix=f"optkit-{job.variant.name}-"))
    try:
        if job.reference is not None:  # the driver's path means nothing here: a node-local copy
            local = folder / "reference.pt"
            if reference is not None:
                local.write_bytes(reference)
            job = job.model_copy(update={"reference": job.reference.model_copy(update={"path": str(local)})})
        out, log = folder / "out.json", folder / "worker.log"
        events: queue.SimpleQueue = queue.SimpleQueue()
        box: dict = {}

        def work() -> None:
            try:
                box["cand"] = run_job(job, out, log, env=_env(forwarded, threads, job, node_id, cpus),
                                      shown_log=Path(shown_log))
            except BaseException as exc:  # raised again below, so Ray reports it
                box["error"] = exc
            finally:
                events.put(None)

        with progress.watching(log, lambda kind, text: events.put({kind: text})):
            thread = threading.Thread(target=work, name="optkit worker", daemon=True)
            thread.start()
            while (item := events.get()) is not None:
                yield item
            thread.join()
        while not events.empty():  # the markers read last
            item = events.get()
            if item is not None:
                yield item
        if "error" in box:
            raise box["error"]
        cand = box["cand"]
        cand.node = (cand.node or here).model_copy(update={"node_id": node_id, "cpus": cpus or here.cpus})
        saved = Path(job.reference.path) if job.is_baseline else None
        yield {"result": cand.model_dump_json(), "log": log.read_text(errors="replace") if log.is_file() else "",
               "reference": saved.read_bytes() if saved and saved.is_file() else None}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
