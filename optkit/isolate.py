"""One variant, one fresh process: clean memory and timing numbers, and a crash, OOM or timeout
ends that variant only. The worker writes its Candidate as JSON; the parent reads it back."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from pydantic import BaseModel

from optkit.models import Checkpoint
from optkit.recipe import BenchSpec, EvalSpec, ModelSpec, Variant
from optkit.results import Candidate, write_model


class Job(BaseModel):
    variant: Variant
    checkpoint: Checkpoint
    model: ModelSpec
    device: str
    eval: EvalSpec | None = None
    bench: BenchSpec | None = None
    # fidelity: the baseline's worker writes its next-token log-probs here, every other worker compares to them
    reference: str | None = None
    is_baseline: bool = False


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when the orchestrator dies, so no orphan keeps the CPU busy."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _tail(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def run_isolated(job: Job, out: Path, log: Path) -> Candidate:
    out.unlink(missing_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    job_file = out.with_suffix(".job.json")
    write_model(job_file, job)
    started = time.perf_counter()
    with open(log, "w") as log_fh:
        proc = subprocess.Popen([sys.executable, "-m", "optkit.isolate", str(job_file), str(out)],
                                stdout=log_fh, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            code = proc.wait(timeout=job.variant.timeout_s)
            error = None
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code, error = proc.returncode, f"timed out after {job.variant.timeout_s:g}s and was killed"
    job_file.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    if error is None and out.is_file():
        return Candidate.model_validate_json(out.read_text())
    if error is None:
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        error = f"worker {how} without a result; last log line: {_tail(log) or '(empty)'}; see {log}"
    cand = Candidate(name=job.variant.name, status="failed", error=error, seconds=seconds)
    write_model(out, cand)
    return cand


def evaluate(lm, job: Job, cand: Candidate) -> None:
    """Perplexity, fidelity to the baseline and lm-eval tasks; unchanged models reuse cached results."""
    from optkit.evaluators import cache

    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    spec = job.eval
    model = cache.model_key(job.checkpoint, job.model.dtype, job.device, job.variant.steps, cand.steps) \
        if cache.enabled(spec.cache) else None
    if spec.perplexity:
        from optkit.evaluators import perplexity

        key = model and cache.entry_key(model, perplexity.cache_what(spec.perplexity))
        cand.accuracy += cache.cached(key, lambda: perplexity.evaluate(lm, spec.perplexity))
        say(f"perplexity: {cand.accuracy[-1].value:.3f}")
    if spec.fidelity and job.reference:
        _fidelity(lm, job, cand, say)
    for task in spec.tasks or []:  # one at a time, so the log shows each score as soon as it exists
        from optkit.evaluators import lm_eval as lm_tasks

        key = model and cache.entry_key(model, lm_tasks.cache_what(task))
        for res in cache.cached(key, lambda t=task: lm_tasks.evaluate(lm, [t])):
            cand.accuracy.append(res)
            say(f"{res.task} {res.metric}: {res.value:.4f} ±{res.stderr or 0:.4f} (n={res.n})"
                + (" (cached)" if res.details.get("cached") else ""))


def _fidelity(lm, job: Job, cand: Candidate, say) -> None:
    """The baseline saves the reference; the others compare to it. A problem here costs a warning, not the
    variant: fidelity is one measurement among several."""
    from optkit.evaluators import fidelity

    ref, spec = Path(job.reference), job.eval.fidelity
    if spec.path is None and job.eval.perplexity and job.eval.perplexity.path:
        spec = spec.model_copy(update={"path": job.eval.perplexity.path})  # the recipe's own text
    try:
        if job.is_baseline:
            fidelity.save_reference(lm, spec, ref)
            say(f"fidelity: saved the baseline's next-token log-probs to {ref}")
        elif ref.is_file():
            cand.accuracy += fidelity.compare(lm, ref)
            kl, _, agree = cand.accuracy[-3:]
            say(f"fidelity: KL mean {kl.value:.4g} nats, top-1 agreement {agree.value:.2%}")
        else:
            cand.warnings.append(f"fidelity: no baseline reference at {ref} (did the baseline fail?); skipped")
    except Exception as exc:
        traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        cand.warnings.append(f"fidelity: skipped ({type(exc).__name__}: {first})")


def build_and_measure(job: Job) -> Candidate:
    from optkit import models
    from optkit.errors import OptkitError
    from optkit.methods.base import apply_steps

    started = time.perf_counter()
    cand = Candidate(name=job.variant.name, status="ok")
    try:
        lm = models.load(job.checkpoint, job.model.dtype, job.device, job.model.trust_pickle,
                         job.model.trust_remote_code)
        lm, cand.steps = apply_steps(lm, job.variant.steps, say=lambda s: print(s, file=sys.stderr, flush=True))
        cand.warnings += [f"{r.method}: {note}" for r in cand.steps for note in r.notes]
        if job.eval:
            evaluate(lm, job, cand)
        if job.bench:
            from optkit.bench import run_bench

            cand.bench = run_bench(lm, job.bench)
            for label, st in (("prefill", cand.bench.prefill_ms), ("decode", cand.bench.decode_tokens_per_s),
                              ("end-to-end", cand.bench.e2e_ms)):
                if st and st.noisy:
                    cand.warnings.append(f"{label} timing is noisy: {st.noisy_reason or 'spread'}; p10-p90 "
                                         f"{st.p10:.4g}-{st.p90:.4g} {st.unit}, other processes used up to "
                                         f"{st.contention or 0:.0%} of CPU")
    except OptkitError as exc:
        cand.status, cand.error = "failed", str(exc)
    except Exception as exc:  # any library failure ends this variant only; the log keeps the traceback
        traceback.print_exc()
        cand.status, cand.error = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    cand.seconds = time.perf_counter() - started
    return cand


def main(argv: list[str]) -> int:
    from optkit.errors import quiet_libraries

    quiet_libraries()
    job = Job.model_validate_json(Path(argv[0]).read_text())
    cand = build_and_measure(job)
    write_model(Path(argv[1]), cand)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
