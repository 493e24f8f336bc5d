"""The ray executor's driver: connects to a Ray cluster (or starts Ray on this machine), submits each variant
as a Ray task (ray_task.py) spread over the nodes, and streams each one's node, progress and result back,
writing variants/<name>.json and logs/<name>.log into the run folder as each finishes, exactly as the local
executor does, so resume, cache, report and gate need nothing else.

The baseline runs first and alone when the others compare their fidelity to it; its reference comes back with
its result, is kept in the run folder (for a resume) and goes to every other task once, through Ray's object
store. A task whose worker or node dies costs its variant only (failed, crashed), retried when the executor
spec asks; Ray's own retries are off so that each attempt is counted here."""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from optkit.errors import BadInput
from optkit.executors.base import Executor, again
from optkit.files import atomic_write
from optkit.job import VariantJob
from optkit.results import NodeRecord, VariantResult, write_model
from optkit.version import __version__

FORWARD = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BadInput("the ray executor needs Ray: pip install 'optkit[ray]' (or use --executor local)") from None
    return ray


def _probe(address: str) -> None:
    """A host:port that nothing listens on fails here at once, instead of after Ray's minute of retries."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address.strip())
    if not m:
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=5).close()
    except OSError as exc:
        raise BadInput(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
                       f"`ray start --head` there, or fix --address") from None


def _forwarded() -> dict:
    """The driver's optkit settings (data, cache), for nodes that do not set their own."""
    from optkit.executors import nodelock
    from optkit.node import CLASS_ENV

    own = (CLASS_ENV, nodelock.ENV, nodelock.THREADS_ENV)  # per node by nature
    return {k: v for k, v in os.environ.items() if (k.startswith("OPTKIT_") and k not in own) or k in FORWARD}


def _token_auth() -> None:
    """The Ray head optkit starts takes Ray's token authentication (Ray >= 2.52): its GCS listens on the node's
    address, and without a token anyone who reaches the port can run code on it. A fresh random token per run,
    in this process's environment only (Ray's own default writes ~/.ray/auth_token); RAY_AUTH_TOKEN given: that
    one. RAY_AUTH_MODE=disabled set by the user is respected, with a warning."""
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
        print("optkit: warning: RAY_AUTH_MODE=disabled: anyone who can reach this machine's Ray ports can run code "
              "on it; unset it to let optkit start Ray with token authentication", file=sys.stderr, flush=True)
        return
    import secrets

    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    try:  # Ray read RAY_AUTH_MODE when it was imported: refresh its config, as ray.init itself does
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
        from ray._raylet import AuthenticationMode, get_authentication_mode

        _enable_token_auth()
        on = get_authentication_mode() == AuthenticationMode.TOKEN
    except ImportError:
        on = False
    if not on:
        raise BadInput("cannot switch on Ray's token authentication in this Ray; set RAY_AUTH_MODE=token (and "
                       "RAY_AUTH_TOKEN) before starting optkit, or install ray==2.60.0")


def check_paths(jobs, shared: list[str], nodes: list[dict], here: str) -> None:
    """A node of another machine must not be sent a path that exists only here: every local path a job reads
    (checkpoint, evaluation and calibration texts, OPTKIT_DATA) must lie under a folder named in
    executor.shared (mounted at the same path on every node). Nothing to check when every node is this machine."""
    others = sorted({n.get("NodeManagerAddress") for n in nodes if n.get("NodeManagerAddress") not in (here, None)})
    if not others:
        return
    roots = [Path(p).expanduser().resolve() for p in shared]
    for job in jobs:
        for what, path in _paths(job):
            target = Path(path).expanduser().resolve()
            if not any(target == r or r in target.parents for r in roots):
                raise BadInput(f"ray: {what} {path} is a path on this machine, and the cluster has nodes on "
                               f"{', '.join(others)}; put it under a folder every node mounts at the same path and "
                               "list that folder in executor.shared (or use a hub id for the model)")


def _paths(job) -> list[tuple[str, str]]:
    """(what, path) of every local file or folder a job reads on its node."""
    from optkit.checkpoints import ALIASES
    from optkit.reuse import data_files

    node_resolved = job.checkpoint.kind == "hub" or job.checkpoint.given in ALIASES  # ray_task resolves it there
    out = [] if node_resolved else [("model.checkpoint", job.checkpoint.location)]
    out += [("data file", f) for f in data_files(job)]
    return out


def _failed(job: VariantJob, exc: Exception, node: NodeRecord | None) -> VariantResult:
    import ray

    where = f" on {node.host}" if node else ""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return VariantResult(name=job.variant.name, status="failed", node=node, error=f"Ray task failed{where}: "
                         f"{type(exc).__name__}: {first}", crashed=not isinstance(exc, ray.exceptions.RayTaskError))


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, spec):
        self.spec, self.ray = spec, _import_ray()
        # no address: RAY_ADDRESS as Ray itself reads it, else a new Ray on this machine (never one that
        # happens to run here already: address "local")
        self.address = spec.address or os.environ.get("RAY_ADDRESS") or None
        if self.address:
            _probe(self.address)
        self._own = False  # whether this executor called ray.init (and so shuts it down)

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():  # a caller (a test, a notebook) already connected this process
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs = {"logging_level": "warning", "log_to_driver": False, "address": self.address or "local"}
        if not self.address:  # Ray on this machine, started here and stopped at the end
            _token_auth()
            kwargs["include_dashboard"] = False
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise BadInput(f"cannot use the Ray cluster at {self.address or 'this machine'}: {first}") from None
        self._own = True

    def _nodes(self) -> list[dict]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def device(self, wanted: str) -> str:
        """cpu needs no cluster yet; cuda and auto are settled by the GPUs the cluster's nodes have."""
        if wanted == "cpu":
            return "cpu"
        self._connect()
        most = max((n["Resources"].get("GPU", 0) for n in self._nodes()), default=0)
        if wanted == "auto":
            return "cuda" if most >= self.spec.gpus else "cpu"
        if most < self.spec.gpus:
            raise BadInput(f"device cuda: no node of the Ray cluster has {self.spec.gpus} GPU(s) (the most is "
                           f"{most:g}); add GPU nodes, lower executor.gpus, or set device: cpu")
        return "cuda"

    def _check_fits(self) -> None:
        most = max((n["Resources"].get("CPU", 0) for n in self._nodes()), default=0)
        if most < self.spec.cpus:  # Ray would keep such tasks pending for ever
            raise BadInput(f"executor.cpus is {self.spec.cpus} but no node of the Ray cluster has more than "
                           f"{most:g} CPUs; lower executor.cpus")

    def run(self, jobs: list[VariantJob], board) -> Iterator[tuple[VariantJob, VariantResult]]:
        self._connect()
        self._check_fits()
        check_paths(jobs, self.spec.shared, self._nodes(), self.ray.util.get_node_ip_address())
        first = [j for j in jobs if j.is_baseline]
        rest = [j for j in jobs if not j.is_baseline]
        if first:  # alone: the others need its reference
            yield from self._drain(first, board, None)
        path = next((Path(j.reference.path) for j in rest if j.reference is not None), None)
        # once into the object store, for every node; none when the baseline failed (the others then say so)
        ref = self.ray.put(path.read_bytes()) if path is not None and path.is_file() else None
        yield from self._drain(rest, board, ref)

    def _options(self, job: VariantJob) -> dict | None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        where = job.where
        opts = {"num_cpus": self.spec.cpus, "max_retries": 0, "name": f"optkit:{where.key}",
                "scheduling_strategy": "SPREAD"}
        if job.device.startswith("cuda"):
            opts["num_gpus"] = self.spec.gpus  # whole GPUs (an int): no two timings share one
        if where.nodes is not None:
            alive = {n["NodeID"] for n in self._nodes()}
            target = next((n for n in where.nodes if n in alive), None)
            if target is None:
                return None
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=target, soft=False)
        return opts

    def _drain(self, jobs: list[VariantJob], board, ref) -> Iterator[tuple[VariantJob, VariantResult]]:
        from optkit.executors.ray_task import run_variant

        ray, forwarded = self.ray, _forwarded()
        attempts: dict[str, int] = {}
        pending: dict = {}  # generator -> (job, node record once known)

        def submit(job: VariantJob) -> VariantResult | None:
            key = job.where.key
            attempts[key] = attempts.get(key, 0) + 1
            opts = self._options(job)
            if opts is None:
                return VariantResult(name=job.variant.name, status="failed",
                                     error="no live Ray node of this hardware class is left to run it on")
            # the job travels without its placement: the driver's paths mean nothing on a node
            gen = run_variant.options(**opts).remote(
                job.model_copy(update={"placement": None}).model_dump_json(),
                ref if job.reference is not None else None, forwarded, __version__, self.spec.cpus,
                str(job.where.log))
            pending[gen] = (job, None)
            return None

        for job in jobs:
            board.update(job.where.key, state="queued")
            result = submit(job)
            if result is not None:
                write_model(job.where.out, result)
                yield job, result
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for gen in ready:
                job, rec = pending[gen]
                where = job.where
                try:
                    item = ray.get(next(gen))
                except (StopIteration, ray.exceptions.RayError) as exc:
                    result = _failed(job, exc, rec)
                    atomic_write(where.log, f"no worker log: {result.error}\n")
                else:
                    if "node" in item:
                        rec = NodeRecord.model_validate(item["node"])
                        pending[gen] = (job, rec)
                        board.update(where.key, node=f"{rec.host}/{(rec.node_id or '')[:6]}")
                    elif "result" not in item:
                        board.marker(where.key, *next(iter(item.items())))
                    if "result" not in item:
                        continue
                    result = self._collect(job, item)
                del pending[gen]
                result.attempts = attempts[where.key]
                if again(result, attempts[where.key], self.spec.retries):
                    board.say(f"{where.key}: {result.error}; trying again")
                    retry = submit(job)
                    if retry is None:
                        continue
                    result = retry
                write_model(where.out, result)
                yield job, result

    def _collect(self, job: VariantJob, item: dict) -> VariantResult:
        """The result of a task into the run folder: the log, and the baseline's reference for the others."""
        atomic_write(job.where.log, item["log"])
        if item["reference"] is not None and job.reference is not None:
            path = Path(job.reference.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_bytes(item["reference"])
            os.replace(tmp, path)
        try:
            return VariantResult.model_validate_json(item["result"])
        except ValueError as exc:  # a damaged result costs its variant, never the sweep
            return VariantResult(name=job.variant.name, status="failed", crashed=True,
                                 error=f"the node sent back an unreadable result ({str(exc).splitlines()[0]})",
                                 key=job.key, key_parts=job.key_parts)

    def close(self) -> None:
        if self._own:
            self.ray.shutdown()
            self._own = False
