"""A variant measured in an engine that has an environment of its own (envs.py), in two worker processes.

The steps run where their libraries are, in optkit's environment (llm-compressor writes the compressed-tensors
folder, a GGUF is converted to safetensors); the model is handed over as a folder; a second worker, under the
engine's interpreter, loads that folder in the engine, evaluates and benchmarks it. A variant with no steps whose
checkpoint the engine loads as it is (an HF or compressed-tensors folder) goes straight to the second worker. Both
workers append to the variant's one log; the two results are merged into one VariantResult (the steps' records
from the first, the measurements from the second, the times of both).

Not measured here: the paired speed-up, which rebuilds the baseline in the variant's process (another engine
in another environment cannot be rebuilt there); the report then ranks by the benchmarks' own figures.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from optkit.results import EngineRun, VariantResult, write_model

DIRECT = ("folder", "hub", "artifact")  # checkpoint kinds an engine in its own environment loads as they are


def engine_of(job) -> str | None:
    """The variant's engine when it has an environment of its own and this process is not in it; else None. The
    engine the variant starts in: the one it names, else its checkpoint format's (an OpenVINO IR folder)."""
    from optkit import envs

    name = job.engine
    spec = envs.spec_of(name) if name else None
    if spec is None or envs.inside(spec):
        return None
    return name


def _merge(built: VariantResult | None, measured: VariantResult, run: dict) -> VariantResult:
    if built is None:
        out = measured
    else:
        out = measured.model_copy(update={
            "steps": built.steps, "warnings": built.warnings + measured.warnings,
            "timeline": built.timeline + measured.timeline, "seconds": built.seconds + measured.seconds})
    out.engine_run = (out.engine_run or EngineRun()).model_copy(update=run)
    return out


def run(job, out: Path, log: Path, env: dict | None, shown_log: Path | None, run_job) -> VariantResult:
    """job.run_job for a variant whose engine has its own environment; run_job (passed in, so this module stands
    below job.py) runs each of the two workers."""
    from optkit import envs
    from optkit.checkpoints import resolve

    name = engine_of(job)
    spec = envs.spec_of(name)
    folder = envs.ready(spec)
    if folder is None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:
            print(f"the {name} environment is not built yet: building it first", file=fh, flush=True)
        folder = envs.build(spec, say=lambda text: print(text, file=sys.stderr, flush=True))
    run = {"environment": folder.name, "versions": envs.key_versions(folder, spec)}
    built, scratch = None, None
    measure = job.model_copy(update={"pair_with": None, "keep_in": None, "save_to": None})
    if job.variant.steps or job.checkpoint.kind not in DIRECT:
        target = Path(job.save_to) if job.save_to else None
        if target is None:
            out.parent.mkdir(parents=True, exist_ok=True)  # a run's baselines/ folder may not exist yet
            scratch = tempfile.mkdtemp(prefix=f"optkit-{job.variant.name}-", dir=out.parent)
            target = Path(scratch) / "model"
        build = job.model_copy(update={
            "variant": job.variant.model_copy(update={"engine": None}), "eval": None, "bench": None,
            "reference": None, "pair_with": None, "keep_in": None, "save_to": str(target)})
        built = run_job(build, out, log, env, shown_log, python=sys.executable)
        if built.status != "ok":
            _cleanup(scratch)
            built.engine_run = EngineRun(**run)
            return built
        measure = measure.model_copy(update={
            "checkpoint": resolve(str(target)), "variant": job.variant.model_copy(update={"steps": []})})
    before = _adopt_orphans()
    try:
        measured = run_job(measure, out, log, envs.worker_env(folder, env), shown_log,
                           python=str(envs.python(folder)), append=built is not None)
    finally:
        _kill_orphans(before)
        _cleanup(scratch)
    merged = _merge(built, measured, run)
    write_model(out, merged)
    return merged


def _children() -> set[int]:
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as fh:
            return {int(p) for p in fh.read().split()}
    except OSError:
        return set()


def _subreaper(on: bool) -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, int(on))  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _adopt_orphans() -> set[int]:
    """Become the subreaper of what the worker starts (Linux): an engine's own processes (vLLM's engine core and
    worker) outlive a worker killed at its timeout; adopted here, they can be ended. -> the children before."""
    _subreaper(True)
    return _children()


def _kill_orphans(before: set[int]) -> None:
    """End the engine processes the worker left behind (adopted since `before`)."""
    import signal

    for pid in _children() - before:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (OSError, ChildProcessError):
            pass
    _subreaper(False)


def _cleanup(scratch: str | None) -> None:
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
