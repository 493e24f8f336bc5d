"""One variant on its way to a worker: VariantJob (what to build, evaluate and benchmark), its Placement (where
the parent keeps its result and log, its key on the live board, the nodes it must run on), and run_job, the
parent's side of the worker protocol: the job as a file in, a VariantResult file out, through isolate.py.

The child's side is worker.py (`python -m optkit.worker JOB OUT`); executors call run_job and never import
the child's code, so nothing here knows how a variant is built or measured."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from optkit import node
from optkit.checkpoints import Checkpoint
from optkit.duel import DuelSpec
from optkit.evaluators.fidelity import Reference
from optkit.recipe import DEFAULT_TIMEOUT_S, BenchSpec, EvalSpec, ModelSpec, Variant, WorkloadSpec
from optkit.results import VariantResult, write_model
from optkit.searchspec import SensitivitySpec
from optkit.trust import Trust


class Placement(BaseModel):
    """Where a job's result goes, as the parent (the pipeline, an executor's driver) sees it. Set by the pipeline
    for a run; the worker never reads it: under Ray these paths exist on the driver only."""

    out: Path  # the VariantResult, written atomically when the job ends
    log: Path  # the worker's log, kept in the run folder
    key: str  # the line on the live board: the variant's name, or "<baseline>@<hardware class>" for a baseline
    # benchmarked again on more hardware
    nodes: list[str] | None = None  # Ray node ids to run on (any one): the baseline for their hardware class


class VariantJob(BaseModel):
    variant: Variant
    checkpoint: Checkpoint
    model: ModelSpec
    device: str
    eval: EvalSpec | None = None
    bench: BenchSpec | None = None
    reference: Reference | None = None  # fidelity: save the baseline's log-probs, or compare to them
    pair_with: Variant | None = None  # the baseline, rebuilt here to time both in alternating rounds
    save_to: str | None = None  # write the built model here as an artifact (optkit quantize / prune / export)
    keep_in: str | None = None  # a model that is one file a step wrote (a GGUF) is kept here, named after the variant
    workload: WorkloadSpec | None = None  # the traffic the benchmark measures the objective of (None: the default)
    duel: DuelSpec | None = None  # instead of the variant's own work: two variants timed against each other (duel.py)
    sensitivity: SensitivitySpec | None = None  # instead: per-group sensitivity of the variant (search/sensitivity.py)
    placement: Placement | None = None  # set by pipeline.run; an executor runs only placed jobs
    trust: Trust = Trust()  # from the command line only (trust.py)
    timeout_s: float = DEFAULT_TIMEOUT_S  # the recipe's; the variant's own timeout_s wins
    key: str | None = None  # reuse.py: what the result depends on, stamped into it
    key_parts: dict[str, str | None] = {}

    @property
    def timeout(self) -> float:
        return self.variant.timeout_s or self.timeout_s

    @property
    def engine(self) -> str:
        """The engine the variant starts in."""
        from optkit.loading import engine_name

        return engine_name(self.checkpoint, self.variant.engine, self.variant.steps)

    @property
    def is_baseline(self) -> bool:
        return self.reference is not None and self.reference.role == "save"

    @property
    def where(self) -> Placement:
        """The placement, which every job an executor gets has."""
        if self.placement is None:
            raise ValueError(f"job {self.variant.name!r} has no placement; pipeline.run places every job it runs")
        return self.placement

    def placed(self, out: Path, log: Path, key: str | None = None, nodes: list[str] | None = None) -> VariantJob:
        return self.model_copy(update={"placement": Placement(out=out, log=log, key=key or self.variant.name,
                                                               nodes=nodes)})


WORKER_MODULES = ("optkit.executors.nodelock", "optkit.faults", "optkit.job", "optkit.progress")  # worker.py's


def _libraries(job: VariantJob) -> tuple[str, ...]:
    """What the job's worker imports before its work starts: torch always; transformers' model code unless the
    variant is a GGUF file throughout (llama.cpp's workers never import it); the modules worker.py imports (not
    worker.py itself, which the child runs as __main__)."""
    gguf = job.checkpoint.kind == "gguf" and job.engine == "llamacpp"
    first = ("torch",) if gguf else ("torch", "transformers.modeling_utils")
    return (*first, *WORKER_MODULES)


def run_job(job: VariantJob, out: Path, log: Path, env: dict | None = None,
            shown_log: Path | None = None, python: str | None = None, append: bool = False,
            warm: bool = False) -> VariantResult:
    """Run one job in a fresh process (env: its whole environment); its VariantResult, or a failed one naming why
    and where the log is (shown_log: where the caller will keep it, if not at `log`). A variant whose engine has
    an environment of its own runs there (handoff.py: python is then that interpreter, append adds to the log).
    warm: forked from a server that has the worker's libraries imported, where it can be (warm.py); CPU jobs
    only until a GPU machine has checked that a child forked from it initialises CUDA as a fresh process does."""
    from optkit import handoff
    from optkit.isolate import last_line, run_module

    if python is None and handoff.engine_of(job):
        return handoff.run(job, out, log, env, shown_log, run_job)
    out.unlink(missing_ok=True)
    job_file = out.with_name(f".{out.stem}.job.json")
    write_model(job_file, job)
    try:
        outcome = run_module("optkit.worker", [str(job_file), str(out)], log, job.timeout, env=env, python=python,
                             append=append, warm=_libraries(job) if warm and job.device == "cpu" else ())
    finally:
        job_file.unlink(missing_ok=True)
    killed = not outcome.timed_out and outcome.code is not None and outcome.code < 0
    unreadable = None
    if not outcome.timed_out and out.is_file():
        try:
            return VariantResult.model_validate_json(out.read_text())
        except (OSError, ValueError) as exc:  # cut short or damaged: the worker died writing it, or disk trouble
            errors = getattr(exc, "errors", None)
            unreadable = errors()[0]["msg"] if callable(errors) else " ".join(str(exc).split())[:200]
    error = outcome.describe(job.timeout)
    if unreadable is not None:
        error = f"worker {error} and left an unreadable result ({unreadable}); see {shown_log or log}"
    elif not outcome.timed_out:
        error = f"worker {error} without a result; last log line: {last_line(log) or '(empty)'}; see {shown_log or log}"
    cand = VariantResult(name=job.variant.name, status="failed", error=error, seconds=outcome.seconds,
                         crashed=killed or (unreadable is not None and outcome.code != 0), node=node.facts(job.device),
                         key=job.key, key_parts=job.key_parts)
    write_model(out, cand)
    return cand
