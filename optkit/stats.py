"""The statistics every figure is judged with, in one place: quantiles and the bootstrap CI of a median
(timings), paired confidence intervals of a difference (accuracy per sample, perplexity per block), the exact
McNemar test (flips), and pairing of per-sample results by document id. The report and the gate both call
these, so they cannot disagree."""

from __future__ import annotations

import math
import random
import statistics

Z95 = 1.96


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
    """Mean per-sample difference new - ref (already paired) with its 95% CI."""
    mean, se = mean_se([b - a for a, b in zip(ref, new)])
    half = Z95 * (se or 0.0)
    return mean, mean - half, mean + half


def paired_ratio_ci(ref_nll: list[float], new_nll: list[float]) -> tuple[float, float] | None:
    """95% CI of the relative perplexity change from per-block mean NLLs on the same tokens (paired, so the
    text's own variability cancels and only the models' difference is left)."""
    if not ref_nll or not new_nll or len(ref_nll) != len(new_nll) or len(ref_nll) < 2:
        return None
    mean, se = mean_se([b - a for a, b in zip(ref_nll, new_nll)])
    return math.exp(mean - Z95 * se) - 1, math.exp(mean + Z95 * se) - 1


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
