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


def run_bench(lm, spec: BenchSpec) -> BenchResult:
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, lm.vocab_size, (1, spec.prompt_len), generator=gen)
    energy = EnergyCounter(lm.device)
    for _ in range(spec.warmup):
        _one_rep(lm, prompt, spec.gen_len, energy)
    pre, pre_share, tps, dec_share, joules = [], [], [], [], []
    with PeakMemory(lm.device) as mem:
        while len(tps) < spec.max_repeats:
            p, ps, d, ds, j = _one_rep(lm, prompt, spec.gen_len, energy)
            pre.append(p * 1000)
            pre_share.append(ps)
            tps.append(spec.gen_len / d)
            dec_share.append(ds)
            joules.append(j)
            if enough(dec_share, spec.repeats) and enough(pre_share, spec.repeats):
                break
    if energy.available and all(j is not None for j in joules):
        energy_result = Energy(status="ok", joules_per_token=sum(joules) / (spec.gen_len * len(joules)),
                               source=energy.source)
    else:
        energy_result = Energy(status="unavailable", reason=energy.reason or "the energy counter did not advance")
    return BenchResult(
        prefill_ms=stats(pre, "ms", pre_share, spec.repeats),
        decode_tokens_per_s=stats(tps, "tokens/s", dec_share, spec.repeats),
        peak_memory_mb=mem.mb,
        peak_memory_source=mem.source,
        size_mb=lm.size_bytes() / 2**20,
        energy=energy_result,
        prompt_len=spec.prompt_len,
        gen_len=spec.gen_len,
        threads=torch.get_num_threads(),
    )
