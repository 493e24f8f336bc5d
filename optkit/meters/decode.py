"""One timed request on a loaded model, the unit every speed figure is made of (the benchmark's repetitions, a
workload's passes, a head-to-head's halves): prefill, then greedy decode steps, with others' share of the CPU
during each and the energy counter's readings; the lists such requests fill; seeded prompts; and the share of the
CPU others may use before a request counts as contended."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from optkit.meters.energy import EnergyCounter, PowerSampler
from optkit.meters.latency import BUSY_SHARE, CpuWatch, busy_limit, enough
from optkit.recipe import BenchSpec, WorkloadSpec


@dataclass
class Samples:
    limit: float = BUSY_SHARE  # share of all cores others may use before a sample counts as contended
    prefill_ms: list[float] = field(default_factory=list)
    prefill_share: list[float | None] = field(default_factory=list)
    tps: list[float] = field(default_factory=list)
    decode_share: list[float | None] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    e2e_share: list[float | None] = field(default_factory=list)
    joules: list[float | None] = field(default_factory=list)  # decode
    prefill_joules: list[float | None] = field(default_factory=list)
    sampled_joules: list[float | None] = field(default_factory=list)  # decode, by power sampling
    decode_s: float = 0.0  # all repetitions
    clean_decode_s: float = 0.0  # uncontended repetitions only


def time_prefill(lm, prompt):
    """One timed prefill; the device is idle before the clock starts and finished when it stops."""
    lm.synchronize()
    with CpuWatch() as watch:
        t0 = time.perf_counter()
        logits, past = lm.start(prompt)
        lm.synchronize()
        seconds = time.perf_counter() - t0
    return logits, past, seconds, watch.share


def joules(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b < a else b - a


def one_rep(lm, prompt, gen_len: int, energy: EnergyCounter, into: Samples) -> None:
    ep = energy.read()
    with CpuWatch() as w_all:
        t_start = time.perf_counter()
        logits, past, prefill, pre_share = time_prefill(lm, prompt)
        token = logits.argmax(-1, keepdim=True)
        lm.synchronize()
        with CpuWatch() as w_dec, PowerSampler(energy) as sampler:
            e0 = energy.read()
            t0 = time.perf_counter()
            for _ in range(gen_len):
                logits, past = lm.step(token, past)
                token = logits.argmax(-1, keepdim=True)
            lm.synchronize()
            t_end = time.perf_counter()
            e1 = energy.read()
    into.prefill_joules.append(joules(ep, e0))
    into.sampled_joules.append(sampler.joules)
    decode = t_end - t0
    into.prefill_ms.append(prefill * 1000)
    into.prefill_share.append(pre_share)
    into.tps.append(prompt.shape[0] * gen_len / decode)
    into.decode_share.append(w_dec.share)
    into.e2e_ms.append((t_end - t_start) * 1000)
    into.e2e_share.append(w_all.share)
    into.joules.append(joules(e0, e1))
    into.decode_s += decode
    into.clean_decode_s += decode if enough([w_dec.share], 1, into.limit) else 0.0


def prompts(lm, batch: int, length: int):
    """Seeded random token ids, led by the model's own prefix (BOS where its tokenizer adds one)."""
    import torch

    ids = torch.randint(3, lm.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    prefix = torch.tensor(lm.prefix[:length], dtype=ids.dtype)
    ids[:, :len(prefix)] = prefix
    return ids


def contention_limit(lm, spec: BenchSpec) -> float:
    """Set the benchmark's threads; the share of the CPU others may use before a sample counts as contended."""
    if spec.threads:
        lm.set_threads(spec.threads)
    lm.expect_decode(spec.gen_len)
    return busy_limit(lm.threads if lm.device == "cpu" else 1)  # on a GPU one CPU thread feeds it


def workload_prompts(lm, other, w: WorkloadSpec) -> list:
    """Seeded prompt ids per workload point, valid for both models (the smaller vocabulary)."""
    small = lm if lm.vocab_size <= other.vocab_size else other
    return [prompts(small, w.concurrency, p.prompt) for p in w.requests]
