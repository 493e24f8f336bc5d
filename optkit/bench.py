"""The benchmark: prefill latency (time to first token) and decode tokens/s at batch 1,
peak memory, size and energy, each repetition watched for contention."""

from __future__ import annotations

import time

from optkit.meters.energy import EnergyCounter
from optkit.meters.latency import CpuWatch, enough, stats
from optkit.meters.memory import PeakMemory
from optkit.recipe import BenchSpec
from optkit.results import BenchResult, Energy


def _one_rep(lm, prompt, gen_len: int, energy: EnergyCounter):
    with CpuWatch() as w_pre:
        t0 = time.perf_counter()
        logits, past = lm.start(prompt)
        lm.synchronize()
        prefill = time.perf_counter() - t0
    token = logits.argmax(-1, keepdim=True)
    with CpuWatch() as w_dec:
        e0 = energy.read()
        t0 = time.perf_counter()
        for _ in range(gen_len):
            logits, past = lm.step(token, past)
            token = logits.argmax(-1, keepdim=True)
        lm.synchronize()
        decode = time.perf_counter() - t0
        e1 = energy.read()
    joules = None if e0 is None or e1 is None or e1 < e0 else e1 - e0
    return prefill, w_pre.share, decode, w_dec.share, joules


def _measure(lm, prompt, spec: BenchSpec, energy: EnergyCounter):
    """Warm up, then repeat until enough uncontended samples (or max_repeats)."""
    for _ in range(spec.warmup):
        _one_rep(lm, prompt, spec.gen_len, energy)
    pre, pre_share, tps, dec_share, joules = [], [], [], [], []
    while len(tps) < spec.max_repeats:
        p, ps, d, ds, j = _one_rep(lm, prompt, spec.gen_len, energy)
        pre.append(p * 1000)
        pre_share.append(ps)
        tps.append(prompt.shape[0] * spec.gen_len / d)
        dec_share.append(ds)
        joules.append(j)
        if enough(dec_share, spec.repeats) and enough(pre_share, spec.repeats):
            break
    return (stats(pre, "ms", pre_share, spec.repeats), stats(tps, "tokens/s", dec_share, spec.repeats),
            joules, len(tps) * prompt.shape[0] * spec.gen_len)


def run_bench(lm, spec: BenchSpec) -> BenchResult:
    import torch

    from optkit.meters.roofline import analyze, kv_bytes_per_token
    from optkit.results import ThroughputPoint

    if spec.threads:
        torch.set_num_threads(spec.threads)
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, lm.vocab_size, (max(spec.batch_sizes), spec.prompt_len), generator=gen)
    energy = EnergyCounter(lm.device)
    curve = []
    with PeakMemory(lm.device) as mem:  # the peak covers the largest batch: what serving it would need
        for batch in spec.batch_sizes:
            prefill, decode, joules, tokens = _measure(lm, prompts[:batch], spec, energy)
            curve.append(ThroughputPoint(batch_size=batch, decode_tokens_per_s=decode, prefill_ms=prefill))
            if batch == 1:
                energy_j, energy_tokens = joules, tokens
    if energy.available and all(j is not None for j in energy_j):
        energy_result = Energy(status="ok", joules_per_token=sum(energy_j) / energy_tokens, source=energy.source)
    else:
        energy_result = Energy(status="unavailable", reason=energy.reason or "the energy counter did not advance")
    size = lm.size_bytes()
    first = curve[0]
    roofline = None
    if spec.roofline:
        elem = 2 if lm.dtype in ("bfloat16", "float16") else 4
        kv = kv_bytes_per_token(lm.config, spec.prompt_len + spec.gen_len // 2, elem)
        compute_dtype = lm.dtype if lm.dtype in ("bfloat16", "float16", "float32") else "float32"
        roofline = analyze(lm.device, compute_dtype, lm.params, size, kv, first.decode_tokens_per_s.median,
                           {p.batch_size: p.decode_tokens_per_s.median for p in curve})
    return BenchResult(
        prefill_ms=first.prefill_ms,
        decode_tokens_per_s=first.decode_tokens_per_s,
        peak_memory_mb=mem.mb,
        peak_memory_source=mem.source,
        size_mb=size / 2**20,
        energy=energy_result,
        prompt_len=spec.prompt_len,
        gen_len=spec.gen_len,
        threads=torch.get_num_threads(),
        throughput=curve,
        roofline=roofline,
    )
