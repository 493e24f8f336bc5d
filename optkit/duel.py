"""Two loaded models timed against each other in one process: interleaved rounds on the workload, so a decision
between two candidates rests on a direct comparison, not on a ratio of two ratios taken against a baseline at
different moments (issue 26: the demo's Q4_1 and Q8_0 files came out 7.24x and 7.29x fp32 that way while their own
benchmarks, and a bare llama.cpp loop, put Q8_0 1.24-1.32x ahead).

A round is one half per model, order swapped every round; a half repeats passes over the workload
(optkit/workload.py) until it has run `min_round_s` seconds, so a fast model is not judged on 0.6 s of decoding.
A round counts only when neither half was contended (others' CPU use, as in the benchmark) nor collapsed (over 2x
slower than that model's fast halves: llama.cpp's OpenMP threads spinning against a neighbour); such rounds are
run again, up to twice the rounds asked for, and what is left unclean is flagged, never quietly used. A duel that
decides between two candidates (`settle`: the runoff's) goes on while the rounds asked for leave the call open
(report/decide.py: the interval straddles an edge of the tie band), up to MORE times the clean rounds asked for and
(MORE + 1) times that many in all.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from optkit.meters.decode import Samples, contention_limit, one_rep, workload_prompts
from optkit.meters.latency import CpuWatch, collapsed, stats
from optkit.recipe import BenchSpec, Variant, WorkloadSpec
from optkit.results import HeadToHead, SideFigures
from optkit.workload import UNIT, Totals, speedup

MIN_ROUND_S = 1.0
ROUNDS = 6
MORE = 2  # clean rounds go on to at most this many times the rounds asked for while the call is still open


class DuelSpec(BaseModel):
    """A duel job (worker.VariantJob.duel): variant a against variant b of the same checkpoint."""

    a: Variant
    b: Variant
    files: dict[str, str] = Field(default_factory=dict, description="variant name -> the file its run kept (GGUF)")
    workload: WorkloadSpec
    rounds: int = ROUNDS
    round_s: float = MIN_ROUND_S


def one_pass(lm, w: WorkloadSpec, ids: list, into: Totals, energy) -> None:
    """One request per workload point, timed as the benchmark times a repetition."""
    for point, prompt in zip(w.requests, ids):
        s = Samples()
        one_rep(lm, prompt, point.output, energy, s)
        into.add(point, prompt.shape[0], s.decode_s, s.prefill_ms[0], s.e2e_ms[0])


def half(lm, w: WorkloadSpec, ids: list, min_s: float, energy) -> tuple[Totals, float | None]:
    """Passes over the workload until min_s seconds have run; the totals and others' share of the CPU meanwhile."""
    out = Totals()
    with CpuWatch() as watch:
        started = time.perf_counter()
        while True:
            one_pass(lm, w, ids, out, energy)
            if time.perf_counter() - started >= min_s:
                break
    return out, watch.share


def head_to_head(a, b, names: tuple[str, str], w: WorkloadSpec, spec: BenchSpec, min_round_s: float = MIN_ROUND_S,
                 rounds: int = ROUNDS, settle: bool = False) -> HeadToHead:
    """a against b on workload w, `rounds` clean interleaved rounds (at most 2 x rounds run); with `settle`, more
    while the call between them is open (at most MORE x rounds clean, (MORE + 1) x rounds run)."""
    from optkit.meters.energy import EnergyCounter

    limit = contention_limit(a, spec)
    contention_limit(b, spec)
    ids = workload_prompts(a, b, w)
    energy = EnergyCounter(a.device)
    for lm in (a, b):  # warm-up: first calls allocate caches and page weights in
        one_pass(lm, w, ids, Totals(), energy)
    halves: dict[str, list[Totals]] = {"a": [], "b": []}
    shares: list[float | None] = []
    while True:
        order = (("a", a), ("b", b)) if len(shares) % 2 == 0 else (("b", b), ("a", a))
        seen = []
        for key, lm in order:
            totals, share = half(lm, w, ids, min_round_s, energy)
            halves[key].append(totals)
            seen.append(share)
        shares.append(None if all(s is None for s in seen) else max(s or 0.0 for s in seen))
        fell = _fell(halves, w.objective)
        clean = [i for i, s in enumerate(shares) if i not in fell and (s is None or s <= limit)]
        more = MORE if settle else 1
        if len(clean) >= more * rounds or len(shares) >= (more + 1) * rounds:
            break
        if len(clean) >= rounds and (not settle or _settled(halves, clean, w.objective)):
            break
    return _result(names, halves, shares, fell, w, rounds, limit, min_round_s)


def _settled(halves: dict[str, list[Totals]], clean: list[int], objective: str) -> bool:
    """Whether the clean rounds' speed-up interval already settles the call (report/decide.py)."""
    from optkit.report.decide import settled
    from optkit.stats import bootstrap_ci

    return settled(*bootstrap_ci(_speedups(halves, clean, objective)))


def _speedups(halves: dict[str, list[Totals]], rounds: list[int], objective: str) -> list[float]:
    """a's speed-up over b on the objective, one per round listed."""
    return [speedup(halves["a"][i].value(objective), halves["b"][i].value(objective), objective) for i in rounds]


def _fell(halves: dict[str, list[Totals]], objective: str) -> set[int]:
    """Rounds where either model's half collapsed (over 2x slower than that model's fast halves)."""
    fell: set[int] = set()
    for key in ("a", "b"):
        fell |= collapsed([t.value(objective) for t in halves[key]], UNIT[objective])
    return fell


def _result(names, halves, shares, fell, w: WorkloadSpec, rounds: int, limit: float,
            min_round_s: float) -> HeadToHead:
    """Figures over the clean rounds, or, when too few were clean, over the `rounds` least contended ones that did
    not collapse (flagged noisy by stats, with the reason)."""
    obj = w.objective
    clean = [i for i, s in enumerate(shares) if i not in fell and (s is None or s <= limit)]
    usable = sorted((i for i in range(len(shares)) if i not in fell), key=lambda i: shares[i] or 0.0)
    every_fell = not usable  # no round left to drop to: all are kept, and the figure says so
    if every_fell:
        usable = sorted(range(len(shares)), key=lambda i: shares[i] or 0.0)
    keep = sorted(clean if len(clean) >= rounds else usable[:rounds])
    pairs = [(halves["a"][i], halves["b"][i]) for i in keep]
    seen = [shares[i] for i in keep]

    def ratios(values: list[float]):
        st = stats(values, "x", seen, rounds, limit)
        if every_fell:
            st.noisy = True
            st.noisy_reason = (st.noisy_reason + "; " if st.noisy_reason else "") + \
                "every round collapsed (one side over 2x slower than its fast halves): kept, not to be trusted"
        elif fell and st.noisy:
            st.noisy_reason += f"; {len(fell)} collapsed rounds were dropped"
        return st

    ratio = ratios(_speedups(halves, keep, obj))
    decode = ratios([x.value("decode") / y.value("decode") for x, y in pairs])
    ttft = ratios([y.value("ttft") / x.value("ttft") for x, y in pairs])

    def side(key: str, name: str) -> SideFigures:
        import statistics

        ts = [halves[key][i] for i in keep]
        return SideFigures(name=name, objective=statistics.median(t.value(obj) for t in ts),
                           decode_tokens_per_s=statistics.median(t.value("decode") for t in ts),
                           ttft_ms=statistics.median(t.value("ttft") for t in ts),
                           e2e_ms=statistics.median(t.value("latency") for t in ts))

    return HeadToHead(a=names[0], b=names[1], objective=obj, unit=UNIT[obj], rounds=len(shares),
                      retried=len(shares) - len(clean), collapsed=len(fell), round_s=min_round_s, speedup=ratio,
                      decode_speedup=decode, ttft_speedup=ttft, sides=[side("a", names[0]), side("b", names[1])])
