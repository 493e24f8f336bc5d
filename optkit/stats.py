"""The statistics every figure is judged with, in one place: quantiles and the bootstrap CI of a median
(timings), paired confidence intervals of a difference (accuracy per sample, perplexity per block), the exact
McNemar test (flips), pairing of per-sample results by document id, and Stats, the summary a timing is reported
as. The report and the gate both call these, so they cannot disagree.

Confidence intervals of a mean use Student's t with n - 1 degrees of freedom, not the normal z = 1.96: with the
~16 blocks a perplexity run has, t is ~2.13 and a z interval would be ~9% too narrow (a gate more confident than
the data allow). The t quantile is computed here from its definition (regularized incomplete beta function), so
optkit needs no scipy."""

from __future__ import annotations

import math
import random
import statistics
from functools import lru_cache

from pydantic import Field

from optkit.finite import Data, Num

Z95 = 1.96  # the normal quantile: the limit of t95(df) for large df


class Stats(Data):
    median: Num
    p10: Num
    p90: Num
    n: int
    unit: str = ""
    noisy: bool = False
    contention: Num | None = Field(default=None, description="max share of CPU used by other processes")
    ci_low: Num | None = Field(default=None, description="bootstrap 95% confidence interval of the median")
    ci_high: Num | None = None
    noisy_reason: str | None = Field(default=None, description="why noisy is set, e.g. the halves disagree")
    collapsed: int = Field(default=0, description="samples over 2x slower than the rest, set aside and retried (a "
                           "llama.cpp collapse on a busy machine)")


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), for x < (a + 1) / (a + b + 2)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (0 < p < 1): bisection on t_cdf, to ~1e-12."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def t95(df: int) -> float:
    """The two-sided 95% multiplier for a mean of df + 1 values (z = 1.96 as df grows without bound)."""
    return t_quantile(0.975, df) if df >= 1 else math.inf


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def bootstrap_ci(values: list[float], resamples: int = 1000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the median (seeded: the same samples give the same CI)."""
    rng = random.Random(0)
    n = len(values)
    meds = [statistics.median(rng.choices(values, k=n)) for _ in range(resamples)] if n > 1 else list(values)
    tail = (1 - level) / 2
    return quantile(meds, tail), quantile(meds, 1 - tail)


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and its standard error (None from one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def paired_mean_ci(ref: list[float], new: list[float]) -> tuple[float, float, float]:
    """Mean per-sample difference new - ref (already paired) with its 95% CI (Student's t, n - 1 df)."""
    diffs = [b - a for a, b in zip(ref, new)]
    mean, se = mean_se(diffs)
    half = t95(len(diffs) - 1) * se if se else 0.0
    return mean, mean - half, mean + half


def paired_ratio_ci(ref_nll: list[float], new_nll: list[float]) -> tuple[float, float] | None:
    """95% CI of the relative perplexity change from per-block mean NLLs on the same tokens (paired, so the
    text's own variability cancels and only the models' difference is left). Student's t with blocks - 1 df."""
    if not ref_nll or not new_nll or len(ref_nll) != len(new_nll) or len(ref_nll) < 2:
        return None
    mean, se = mean_se([b - a for a, b in zip(ref_nll, new_nll)])
    half = t95(len(ref_nll) - 1) * se
    return math.exp(mean - half) - 1, math.exp(mean + half) - 1


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under no difference each discordant pair is a fair coin."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def pair_by_id(ref: list, ref_ids: list | None, new: list, new_ids: list | None) -> tuple[list, list] | None:
    """Per-sample results of two runs lined up by document id (the order a run writes them in may differ);
    None when they do not cover the same documents. Without ids on both sides, by position (equal lengths)."""
    if not ref or not new:
        return None
    if ref_ids is None or new_ids is None:
        return (list(ref), list(new)) if len(ref) == len(new) and ref_ids is None and new_ids is None else None
    if len(ref_ids) != len(ref) or len(new_ids) != len(new) or sorted(ref_ids) != sorted(new_ids) \
            or len(set(ref_ids)) != len(ref_ids):
        return None
    by_id = dict(zip(new_ids, new))
    return list(ref), [by_id[i] for i in ref_ids]
