"""The child's side of the worker protocol: `python -m optkit.worker JOB OUT` builds one variant in its own
process: load -> steps -> (artifact) -> evaluate -> bench -> VariantResult, written to OUT.

The parent's side (VariantJob, run_job) is job.py; nothing here knows how variants are scheduled.
"""

from __future__ import annotations

import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from optkit import faults, node
from optkit.executors import nodelock
from optkit.job import VariantJob
from optkit.progress import phase
from optkit.results import PhaseTime, VariantResult, write_model


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextmanager
def _span(cand: VariantResult, name: str):
    """A phase: its marker line for the live display, and its start and end in the candidate's timeline."""
    phase(name)
    start = time.time()
    try:
        yield
    finally:
        cand.timeline.append(PhaseTime(phase=name, start=start, end=time.time()))


@contextmanager
def _hold(cand: VariantResult, lock, why: str):
    """Take a node lock (nodelock.shared / exclusive); time spent waiting for it is a phase of its own."""
    waited: list[float] = []

    def on_wait() -> None:
        if not waited:
            waited.append(time.time())
            phase("waiting", why)

    with lock(on_wait) as value:
        if waited:
            cand.timeline.append(PhaseTime(phase="waiting", start=waited[0], end=time.time()))
        yield value


def evaluate(lm, job: VariantJob, cand: VariantResult) -> None:
    """Perplexity, fidelity to the baseline and lm-eval tasks; unchanged models reuse cached results."""
    from optkit.evaluators import cache

    spec = job.eval
    if job.checkpoint.kind == "gguf":
        _agreement(job, cand)
    model = cache.model_key(job.checkpoint, job.model.dtype, job.device, job.variant.steps, cand.steps,
                            job.variant.engine) if cache.enabled(spec.cache) else None
    if spec.perplexity:
        from optkit.evaluators import perplexity

        key = model and cache.entry_key(model, perplexity.cache_what(spec.perplexity))
        cand.accuracy += cache.cached(key, lambda: perplexity.evaluate(lm, spec.perplexity))
        say(f"perplexity: {cand.accuracy[-1].value:.3f}")
    if spec.fidelity and job.reference:
        _fidelity(lm, job, cand)
    for task in spec.tasks or []:  # one at a time, so the log shows each score as soon as it exists
        from optkit.evaluators import lm_eval as lm_tasks

        key = model and cache.entry_key(model, lm_tasks.cache_what(task))
        for res in cache.cached(key, lambda t=task: lm_tasks.evaluate(lm, [t])):
            cand.accuracy.append(res)
            say(f"{res.task} {res.metric}: {res.value:.4f} ±{res.stderr or 0:.4f} (n={res.n})"
                + (" (cached)" if res.details.get("cached") else ""))


def _agreement(job: VariantJob, cand: VariantResult) -> None:
    """A GGUF source in llama.cpp and in PyTorch (its dequantized copy) on the same ids: measured once per file,
    cached, recorded on every variant of it; a disagreement is a warning on the variant and in the report."""
    from optkit.engines.llamacpp import agreement

    cand.logit_agreement = agreement.for_source(Path(job.checkpoint.location))
    found = cand.logit_agreement
    if found.result == "disagrees":
        cand.warnings.append(f"logit agreement: {found.model} in llama.cpp and in PyTorch differ (KL "
                             f"{found.kl_mean:.3g} nats, top-1 {found.top1_agreement:.1%}; bound: {found.bound}): "
                             f"{found.detail}")
    say(f"logit agreement of the source (llama.cpp vs PyTorch): {found.result}"
        + (f", KL {found.kl_mean:.3g} nats, top-1 {found.top1_agreement:.1%}" if found.kl_mean is not None
           else f" ({found.detail})"))


def _fidelity(lm, job: VariantJob, cand: VariantResult) -> None:
    """The baseline saves the reference; the others compare to it. A problem here costs a warning, not the
    variant: fidelity is one measurement among several."""
    from optkit.evaluators import fidelity

    ref, spec = Path(job.reference.path), job.eval.fidelity
    if spec.path is None and job.eval.perplexity and job.eval.perplexity.path:
        spec = spec.model_copy(update={"path": job.eval.perplexity.path})  # the recipe's own text
    try:
        if job.reference.role == "save":
            fidelity.save_reference(lm, spec, ref)
            say(f"fidelity: saved the baseline's next-token log-probs to {ref}")
        elif ref.is_file():
            results = {r.metric: r for r in fidelity.compare(lm, ref)}
            cand.accuracy += results.values()
            say(f"fidelity: KL mean {results['kl_mean'].value:.4g} nats, "
                f"top-1 agreement {results['top1_agreement'].value:.2%}")
        else:
            cand.warnings.append(f"fidelity: no baseline reference at {ref} (did the baseline fail?); skipped")
    except Exception as exc:
        traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        cand.warnings.append(f"fidelity: skipped ({type(exc).__name__}: {first})")


def _bench(lm, job: VariantJob, cand: VariantResult) -> None:
    from optkit.bench import run_bench

    cand.bench = run_bench(lm, job.bench, job.workload)
    for label, st in (("prefill", cand.bench.prefill_ms), ("decode", cand.bench.decode_tokens_per_s),
                      ("end-to-end", cand.bench.e2e_ms)):
        if st and st.noisy:
            cand.warnings.append(f"{label} timing is noisy: {st.noisy_reason or 'spread'}; p10-p90 "
                                 f"{st.p10:.4g}-{st.p90:.4g} {st.unit}, other processes used up to "
                                 f"{st.contention or 0:.0%} of CPU")


def _room_for(params: int, device: str) -> str | None:
    """Why a float32 copy of a model with `params` weights would not fit beside the one loaded, or None."""
    need = params * 4 * 1.3  # float32 weights and working memory: the most a baseline usually needs
    if device.startswith("cuda"):
        import torch

        free = torch.cuda.mem_get_info()[0]
    else:
        try:
            with open("/proc/meminfo") as fh:
                free = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("MemAvailable:"))
        except (OSError, StopIteration):
            return None  # nobody can tell: try
    return None if free > need else f"the baseline needs ~{need / 2**30:.1f} GiB beside this variant, " \
                                    f"{free / 2**30:.1f} GiB are free"


def _pair(lm, job: VariantJob, cand: VariantResult) -> None:
    """Rebuild the baseline in this process and time both in alternating rounds (bench.paired_speedup)."""
    from optkit import loading
    from optkit.bench import paired_speedup
    from optkit.engines.method import apply_steps
    from optkit.results import PairedSpeed

    name = job.pair_with.name
    skip = _room_for(lm.params, job.device)
    if any(s.auto_exclude is not None for s in job.pair_with.steps):
        skip = "the baseline's own steps search (auto_exclude) and are not rebuilt here"
    from optkit import handoff

    if handoff.engine_of(job.model_copy(update={"variant": job.pair_with})):
        skip = f"the baseline runs in {job.pair_with.engine}, in an environment of its own, not rebuilt here"
    if skip:
        cand.bench.paired = PairedSpeed(baseline=name, skipped=skip)
        say(f"paired speed-up: skipped ({skip})")
        return
    base = loading.load(job.checkpoint, job.model.dtype, job.device, job.trust.allow_pickle,
                        job.trust.trust_remote_code, loading.engine_name(job.checkpoint, job.pair_with.engine,
                                                                         job.pair_with.steps))
    base, _ = apply_steps(base, job.pair_with.steps)
    cand.bench.paired = paired_speedup(lm, base, name, job.bench, job.workload)
    st = cand.bench.paired.decode_speedup
    say(f"paired speed-up vs {name}: decode {st.median:.2f}x [{st.p10:.2f}-{st.p90:.2f}] over {st.n} rounds"
        + (f" (noisy: {st.noisy_reason})" if st.noisy else ""))


def _serving(lm, job: VariantJob, cand: VariantResult) -> None:
    """The online serving sweep, last (the engine may close the loaded model for its server)."""
    from optkit.results import ServingRun

    spec, b = job.bench.serving, job.bench
    say(f"serving: concurrency {', '.join(map(str, spec.concurrency))}, {spec.requests} requests each")
    run = lm.serve(spec, b.prompt_len, b.gen_len)
    if run is None:
        from optkit import registry

        label = registry.engines.cls(lm.engine).label
        run = ServingRun(note=f"optkit drives no server for {label} (bench.serving runs in vLLM)")
    cand.bench.serving = run
    for p in run.points:
        say(f"serving: concurrency {p.concurrency}: {p.output_throughput:.1f} tok/s out, "
            f"TTFT p50 {p.ttft_ms.get('p50', 0):.0f} ms, TPOT p50 {p.tpot_ms.get('p50', 0):.1f} ms")
    if run.note:
        say(f"serving: {run.note}")
        if run.server is not None:  # a sweep that failed or stopped short, not an engine without a server
            cand.warnings.append(f"serving: {run.note}")


def _deployable(lm, job: VariantJob, cand: VariantResult) -> None:
    """What the variant runs in, and the file to deploy where the model is one file (kept out of a step's
    temporary folder, so the report can name it)."""
    cand.engine, cand.format = lm.engine, lm.format
    if lm.startup_seconds or lm.engine_settings:  # a costly start (vLLM), reported apart from its speed
        from optkit.results import EngineRun

        cand.engine_run = EngineRun(startup_seconds=dict(lm.startup_seconds), settings=dict(lm.engine_settings))
    if job.keep_in and not job.save_to:
        path = lm.keep(Path(job.keep_in), job.variant.name)
        cand.file = str(path) if path else None


def _environment(job: VariantJob) -> None:
    """Variables the job's engines read once, when their library loads (Engine.environment), set
    before any library loads: the engine the variant starts in and those its steps convert to."""
    import os

    from optkit import formats, registry

    engines = {job.engine}
    for step in job.variant.steps:
        try:
            made = registry.methods.cls(step.method).produces
        except Exception:  # an unknown method fails later, with its step named
            continue
        if made is not None:
            engines.add(formats.get(made).engine)
    for name in engines:
        try:
            settings = registry.engines.cls(name).environment
        except Exception:
            continue
        for key, value in settings.items():
            os.environ.setdefault(key, value)


def _duel(job: VariantJob, cand: VariantResult) -> None:
    """Two variants timed against each other in this process (duel.py), instead of one variant's own work."""
    from optkit.runoff import run_duel_job

    with _hold(cand, nodelock.exclusive, "other work on the node first") as threads:
        if threads and job.bench and not job.bench.threads:  # the node is the duel's alone: all its CPUs
            job = job.model_copy(update={"bench": job.bench.model_copy(update={"threads": threads})})
        with _span(cand, "benchmarking"):
            run_duel_job(job, cand)


def _sensitivity(job: VariantJob, cand: VariantResult) -> None:
    """Each tensor group of the variant quantized alone and scored (search/sensitivity.py)."""
    from optkit.search.sensitivity import run_sensitivity_job

    with _hold(cand, nodelock.shared, "a benchmark has this node"), _span(cand, "evaluating"):
        run_sensitivity_job(job, cand)


def _variant(job: VariantJob, cand: VariantResult) -> None:
    """Build, evaluate and benchmark one variant."""
    from optkit import artifacts, loading
    from optkit.engines.method import apply_steps

    with _hold(cand, nodelock.shared, "a benchmark has this node"):  # under the ray executor only
        with _span(cand, "building"):
            lm = loading.load(job.checkpoint, job.model.dtype, job.device, job.trust.allow_pickle,
                              job.trust.trust_remote_code, job.engine)
            lm, cand.steps = apply_steps(lm, job.variant.steps, say=say)
            cand.tokenizer_checks = list(getattr(lm, "tokenizer_checks", []))
            _deployable(lm, job, cand)
            cand.warnings += [f"{r.method}: {note}" for r in cand.steps for note in r.notes]
            if job.save_to:
                path = artifacts.write(Path(job.save_to), lm, job.checkpoint, job.model, job.variant.steps,
                                       cand.steps, job.trust)
                say(f"artifact: wrote {path}")
        if job.eval:
            with _span(cand, "evaluating"):
                evaluate(lm, job, cand)
    if job.bench:
        with _hold(cand, nodelock.exclusive, "other work on the node first") as threads:
            if threads and not job.bench.threads:  # the node is this benchmark's alone: all its CPUs
                job = job.model_copy(update={"bench": job.bench.model_copy(update={"threads": threads})})
            with _span(cand, "benchmarking"):
                _bench(lm, job, cand)
                if job.pair_with is not None and job.bench.paired_rounds:
                    _pair(lm, job, cand)
                if job.bench.serving is not None:
                    _serving(lm, job, cand)


def build_and_measure(job: VariantJob) -> VariantResult:
    from optkit.errors import OptkitError

    started = time.perf_counter()
    cand = VariantResult(name=job.variant.name, status="ok", key=job.key, key_parts=job.key_parts)
    try:
        work = _duel if job.duel is not None else _sensitivity if job.sensitivity is not None else _variant
        work(job, cand)
    except OptkitError as exc:
        cand.status, cand.error = "failed", str(exc)
    except Exception as exc:  # any library failure ends this variant only; the log keeps the traceback
        traceback.print_exc()
        cand.status, cand.error = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    cand.seconds = time.perf_counter() - started
    cand.node = node.facts(job.device, threads=cand.bench.threads if cand.bench else None)
    return cand


def main(argv: list[str]) -> int:
    from optkit.errors import quiet_libraries
    from optkit.isolate import guard_group

    guard_group()  # the orchestrator gone (kill -9): this worker and the converters it started go too
    quiet_libraries()
    job = VariantJob.model_validate_json(Path(argv[0]).read_text())
    _environment(job)
    cand = build_and_measure(job)
    faults.inject(cand, Path(argv[1]))
    write_model(Path(argv[1]), cand)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
