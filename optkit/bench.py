"""The benchmark: prefill latency (time to first token) at one or more prompt lengths, decode tokens/s
across batch sizes, end-to-end generate latency at batch 1, peak memory, size and energy; each repetition
watched for contention, and each batch size measured for at least `min_seconds` of decode."""

from __future__ import annotations

from optkit.meters.decode import Samples, contention_limit, one_rep, prompts, time_prefill
from optkit.meters.energy import EnergyCounter
from optkit.meters.latency import (
    HALVES,
    enough,
    halves_gap,
    marked,
    stats,
    uncontended,
)
from optkit.meters.memory import PeakMemory
from optkit.recipe import BenchSpec, WorkloadSpec
from optkit.results import BenchResult, Energy

HARD_CAP = 10_000  # repetitions per batch size, whatever min_seconds asks of a very fast model


def _done(s: Samples, spec: BenchSpec) -> bool:
    """Enough uncontended repetitions, enough uncontended decode time, and (from 4 repetitions on) first and
    second half agreeing within 10%; past max_repeats, contention and drift are no longer waited out (the
    result is flagged instead) but min_seconds of measurement still is."""
    n = len(s.tps)
    if n >= HARD_CAP:
        return True
    decode_share = marked(s.tps, s.decode_share, "tokens/s")  # a collapsed repetition is redone like a contended one
    clean = enough(decode_share, spec.repeats, s.limit) and enough(s.prefill_share, spec.repeats, s.limit)
    # halves that disagree: keep measuring while repeats are left
    steady = (halves_gap(uncontended(s.tps, decode_share, s.limit)) or 0.0) <= HALVES
    if clean and steady and s.clean_decode_s >= spec.min_seconds:
        return True
    return n >= spec.max_repeats and s.decode_s >= spec.min_seconds


def _measure(lm, prompt, spec: BenchSpec, energy: EnergyCounter, limit: float) -> Samples:
    """Warm up, then repeat until _done."""
    for _ in range(spec.warmup):
        one_rep(lm, prompt, spec.gen_len, energy, Samples(limit))
    samples = Samples(limit)
    while not samples.tps or not _done(samples, spec):
        one_rep(lm, prompt, spec.gen_len, energy, samples)
    return samples


def _prefill_only(lm, prompt, spec: BenchSpec, limit: float):
    """Time to first token at one more prompt length: repeats (plus contention extras up to max_repeats)."""
    for _ in range(spec.warmup):
        time_prefill(lm, prompt)
    ms, shares = [], []
    while len(ms) < spec.max_repeats:
        _, _, seconds, share = time_prefill(lm, prompt)
        ms.append(seconds * 1000)
        shares.append(share)
        if enough(shares, spec.repeats, limit):
            break
    return stats(ms, "ms", shares, spec.repeats, limit)


def _energy(counter: EnergyCounter, first: Samples, spec: BenchSpec, idle: float | None) -> Energy | None:
    """Batch-1 energy per decoded and per prompt token, above idle, and the sampling cross-check."""
    if not counter.available or not first.joules or any(j is None for j in first.joules):
        return None
    tokens = len(first.tps) * spec.gen_len
    decode_j = sum(first.joules)
    sampled = sum(first.sampled_joules) if all(j is not None for j in first.sampled_joules) else None
    if decode_j <= 0 and sampled:  # the counter "works" but reads zero: never publish that as a result
        return Energy(status="unavailable", source=counter.source,
                      reason=f"the energy counter did not advance while power sampling measured {sampled:.3g} J")
    out = Energy(status="ok", joules_per_token=decode_j / tokens, source=counter.source, idle_watts=idle)
    if all(j is not None for j in first.prefill_joules):
        out.prefill_joules_per_token = sum(first.prefill_joules) / (len(first.prefill_joules) * spec.prompt_len)
    if idle is not None:
        out.joules_per_token_above_idle = max(0.0, decode_j - idle * first.decode_s) / tokens
    if sampled is not None:
        out.sampled_vs_counter = sampled / decode_j
    return out


def paired_speedup(lm, base, baseline: str, spec: BenchSpec, workload: WorkloadSpec | None = None):
    """The variant against the baseline in one process: duel.head_to_head on the workload, `paired_rounds` clean
    interleaved rounds of at least a second each (half of min_seconds where that is less: tests ask for none), order
    swapped every round, a contended or collapsed round run again; per round a speed-up on the workload's objective,
    on decode and on time to first token."""
    from optkit.duel import MIN_ROUND_S, head_to_head
    from optkit.results import PairedSpeed
    from optkit.workload import resolve

    duel = head_to_head(lm, base, ("variant", baseline), resolve(workload, spec), spec,
                        min_round_s=min(MIN_ROUND_S, spec.min_seconds / 2), rounds=spec.paired_rounds)
    return PairedSpeed(baseline=baseline, rounds=spec.paired_rounds, decode_speedup=duel.decode_speedup,
                       prefill_speedup=duel.ttft_speedup, objective=duel.speedup, objective_name=duel.objective,
                       run=duel.rounds, retried=duel.retried, round_s=duel.round_s)


def run_bench(lm, spec: BenchSpec, workload: WorkloadSpec | None = None) -> BenchResult:
    """workload: the recipe's traffic, measured after the rest (None: the default, read off the batch-1 curve)."""
    from optkit import workload as traffic
    from optkit.meters.roofline import analyze, kv_bytes_per_token
    from optkit.results import PrefillPoint, ThroughputPoint

    limit = contention_limit(lm, spec)
    longest = max(spec.prefill_lens())
    ids = prompts(lm, min(max(spec.batch_sizes), lm.max_batch or max(spec.batch_sizes)), longest)
    energy = EnergyCounter(lm.device)
    idle = energy.idle_watts() if energy.available else None  # before any of our work heats the device
    curve, prefill_curve = [], []
    cap = lm.max_batch
    notes = [f"batch {b}: not supported ({lm.engine} decodes at most {cap} sequences together)"
             for b in spec.batch_sizes if cap and b > cap]
    with PeakMemory(lm.device) as mem:  # the peak covers the largest batch: what serving it would need
        for batch in [b for b in spec.batch_sizes if not cap or b <= cap]:
            s = _measure(lm, ids[:batch, :spec.prompt_len], spec, energy, limit)
            curve.append(ThroughputPoint(
                batch_size=batch, decode_tokens_per_s=stats(s.tps, "tokens/s", s.decode_share, spec.repeats, limit),
                prefill_ms=stats(s.prefill_ms, "ms", s.prefill_share, spec.repeats, limit), decode_seconds=s.decode_s))
            if batch == 1:
                first = s
                e2e = stats(s.e2e_ms, "ms", s.e2e_share, spec.repeats, limit)
        for length in spec.prefill_lens():
            st = curve[0].prefill_ms if length == spec.prompt_len else \
                _prefill_only(lm, ids[:1, :length], spec, limit)
            prefill_curve.append(PrefillPoint(prompt_len=length, prefill_ms=st))
        wanted = traffic.resolve(workload, spec)
        figures = traffic.from_bench(curve[0], spec) if traffic.is_default_shape(wanted, spec) else \
            traffic.measure(lm, wanted, spec, energy, limit)
    energy_result = _energy(energy, first, spec, idle)
    if energy_result is None:
        energy_result = Energy(status="unavailable", reason=energy.reason or "the energy counter did not advance")
    size = lm.size_bytes()
    roofline = None
    if spec.roofline:
        elem = 2 if lm.dtype in ("bfloat16", "float16") else 4
        kv = kv_bytes_per_token(lm.config, spec.prompt_len + spec.gen_len // 2, elem)
        compute_dtype = lm.dtype if lm.dtype in ("bfloat16", "float16", "float32") else "float32"
        roofline = analyze(lm.device, compute_dtype, lm.params, size, kv, curve[0].decode_tokens_per_s.median,
                           {p.batch_size: p.decode_tokens_per_s.median for p in curve})
    return BenchResult(
        prefill_ms=curve[0].prefill_ms,
        decode_tokens_per_s=curve[0].decode_tokens_per_s,
        peak_memory_mb=mem.mb,
        peak_memory_source=mem.source,
        size_mb=size / 2**20,
        energy=energy_result,
        prompt_len=spec.prompt_len,
        gen_len=spec.gen_len,
        threads=lm.threads,
        throughput=curve,
        roofline=roofline,
        e2e_ms=e2e,
        prefill_by_prompt_len=prefill_curve,
        batch_notes=notes,
        workload=figures,
    )
