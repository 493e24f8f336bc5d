"""Timing statistics that notice a busy machine.

Contention is read from /proc/stat around each sample: CPU time spent by everyone minus our own
process and the processes under it (an engine's own: vLLM computes in its engine-core process; steal time
included: a neighbour VM is a neighbour too), as a share of all cores. It is judged
against the cores the benchmark leaves free: a 2-thread decode on 2 cores is slowed by any other runnable
process, a 1-thread decode on 8 cores is not. Samples taken while others used more than the free cores (plus
a quarter of a core) are set aside when enough clean ones exist; otherwise the result is flagged noisy
instead of silently published. A result is also
flagged when the first and second half of its repetitions disagree by more than 10%: two back-to-back runs
must agree, or the number does not describe the model.

A collapse is caught whatever /proc/stat says: llama.cpp with 2 OpenMP threads on a busy 2-core machine decoded
3.8-11 tokens/s where 1 thread gave 47-56 (its threads spin at barriers while the other one is descheduled), a
5-10x drop that a share of "others" can miss when the others are short-lived. A sample more than 2x slower than
the rest's upper quartile is never used; the measurement goes on (up to max_repeats) and says so when it ends.
"""

from __future__ import annotations

import os
import statistics
import time

from optkit.stats import bootstrap_ci, quantile

BUSY_SHARE = 0.25  # share of all cores others may use when nobody says how many the benchmark uses
SLACK_CORES = 0.25  # what other processes may use beyond the cores the benchmark leaves free
SPREAD = 0.25  # (p90 - p10) / median above this: a noisy measurement
HALVES = 0.10  # medians of the first and second half of the repetitions further apart: not reproducible
COLLAPSE = 2.0  # a sample this many times slower than the rest's upper quartile is a collapse, not a measurement
HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc's clock ticks per second


class CpuWatch:
    """Share of all cores used by other processes during a region (None where /proc/stat is absent)."""

    def __init__(self):
        self.cores = os.cpu_count() or 1

    def _busy(self) -> float | None:
        try:
            with open("/proc/stat") as fh:
                fields = [int(x) for x in fh.readline().split()[1:]]
        except OSError:
            return None
        return (sum(fields) - fields[3] - fields[4]) / HZ

    def __enter__(self):
        self.busy0, self.own0, self.t0 = self._busy(), _own_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy1, own1, wall = self._busy(), _own_cpu(), time.perf_counter() - self.t0
        if self.busy0 is None or busy1 is None or wall <= 0:
            self.share = None
        else:
            others = (busy1 - self.busy0) - (own1 - self.own0)
            self.share = max(0.0, others / (self.cores * wall))
        return False


def _own_cpu() -> float:
    """CPU seconds of this process, of every live process under it, and of children already waited for. Counting
    only this process put vLLM's engine-core process, one busy core of two, among "others": every vLLM sample
    was flagged contended on an idle machine."""
    from optkit.meters.memory import tree

    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for pid in tree()[1:]:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / HZ  # utime, stime (fields 14 and 15 of proc(5))
    return total


def busy_limit(threads: int | None, cores: int | None = None) -> float:
    """The share of all cores other processes may use before a sample counts as contended, for a benchmark
    computing on `threads` cores (None: all of them)."""
    cores = cores or os.cpu_count() or 1
    free = max(0, cores - (threads or cores))
    return (free + SLACK_CORES) / cores


def halves_gap(values: list[float]) -> float | None:
    """Relative difference between the medians of the first and second half of the samples, in the order
    taken: two back-to-back runs that disagree mean the machine drifted (thermal, frequency, neighbours)."""
    if len(values) < 4:  # a "half" of one sample is that sample's own noise, not drift
        return None
    half = len(values) // 2
    a, b = statistics.median(values[:half]), statistics.median(values[half:])
    return abs(b - a) / min(a, b) if min(a, b) > 0 else None


def stats(values: list[float], unit: str, shares: list[float | None], wanted: int, limit: float = BUSY_SHARE,
          fell: set[int] | None = None):
    """Median / p10 / p90 / bootstrap CI over clean samples when there are enough of them, else over all but
    collapsed ones (`fell`: indices known to have collapsed, besides those the values show); flagged noisy, with
    the reason, when contended, widely spread or when its two halves disagree."""
    from optkit.stats import Stats

    known = [s for s in shares if s is not None]
    fell = collapsed(values, unit) | (fell or set())
    shares = [COLLAPSED if i in fell else s for i, s in enumerate(shares)]
    clean = uncontended(values, shares, limit)
    use = clean if len(clean) >= wanted else [v for i, v in enumerate(values) if i not in fell]
    med = statistics.median(use)
    p10, p90 = quantile(use, 0.1), quantile(use, 0.9)
    lo, hi = bootstrap_ci(use)
    reasons = []
    if fell and len(clean) < wanted:
        reasons.append(f"{len(fell)} of {len(values)} samples collapsed (over {COLLAPSE:g}x slower than the rest)")
    if len(clean) < wanted:
        reasons.append(f"only {len(clean)} of {wanted} samples taken while other processes left the benchmark's "
                       f"cores alone (others used up to {max(known, default=0):.0%} of the CPU)")
    if med > 0 and (p90 - p10) / med > SPREAD:
        reasons.append(f"p10-p90 spread is {(p90 - p10) / med:.0%} of the median")
    gap = halves_gap(use)
    if gap is not None and gap > HALVES:
        reasons.append(f"first and second half of the repetitions differ by {gap:.0%} (over {HALVES:.0%})")
    return Stats(median=med, p10=p10, p90=p90, n=len(use), unit=unit, noisy=bool(reasons),
                 contention=round(max(known), 3) if known else None, ci_low=lo, ci_high=hi,
                 noisy_reason="; ".join(reasons) or None, collapsed=len(fell))


COLLAPSED = 1e9  # the share recorded for a collapsed sample: above every limit, so it never counts as clean


def slower(unit: str) -> bool:
    """Whether a larger value of this unit is a slower measurement (milliseconds) rather than a faster one."""
    return unit == "ms"


def collapsed(values: list[float], unit: str) -> set[int]:
    """Indices of samples more than COLLAPSE times slower than the upper quartile of all samples (the fast end:
    contention only ever slows a run down). Needs 3 samples; a 2-sample spread is not a reference. Ratios ("x")
    are not judged: a collapse of either side moves them, up or down; their callers judge each side's timings."""
    if len(values) < 3 or unit == "x":
        return set()
    if slower(unit):
        ref = quantile(values, 0.25)
        return {i for i, v in enumerate(values) if ref > 0 and v > COLLAPSE * ref}
    ref = quantile(values, 0.75)
    return {i for i, v in enumerate(values) if v * COLLAPSE < ref}


def marked(values: list[float], shares: list[float | None], unit: str) -> list[float | None]:
    """shares with every collapsed sample's set above any limit, so code counting clean samples skips it."""
    fell = collapsed(values, unit)
    return [COLLAPSED if i in fell else s for i, s in enumerate(shares)]


def uncontended(values: list[float], shares: list[float | None], limit: float = BUSY_SHARE) -> list[float]:
    """The samples taken while other processes left the benchmark's cores alone (or where nobody could tell)."""
    return [v for v, s in zip(values, shares) if s is None or s <= limit]


def enough(shares: list[float | None], wanted: int, limit: float = BUSY_SHARE) -> bool:
    """Enough uncontended samples? Extra repeats only help against contention, not intrinsic spread."""
    return len(uncontended(list(shares), shares, limit)) >= wanted
