"""Derived views of a report: per-variant deltas to the baseline, the Pareto frontier, a recommendation."""

from __future__ import annotations

from dataclasses import dataclass

from optkit.results import Candidate, Report

DEFAULT_PPL_BUDGET = 0.05


@dataclass
class Row:
    name: str
    status: str
    ppl: float | None = None
    ppl_se: float | None = None
    tps: float | None = None
    prefill_ms: float | None = None
    size_mb: float | None = None
    peak_mb: float | None = None
    noisy: bool = False
    ppl_delta: float | None = None  # relative to the baseline
    speedup: float | None = None
    size_ratio: float | None = None  # baseline size / this size
    error: str | None = None


def perplexity(c: Candidate) -> tuple[float | None, float | None]:
    r = next((a for a in c.accuracy if a.metric == "token_perplexity"), None)
    return (r.value, r.stderr) if r else (None, None)


def rows(report: Report) -> list[Row]:
    out = []
    for c in report.variants:
        ppl, se = perplexity(c)
        b = c.bench
        out.append(Row(
            name=c.name, status=c.status, ppl=ppl, ppl_se=se, error=c.error,
            tps=b.decode_tokens_per_s.median if b else None,
            prefill_ms=b.prefill_ms.median if b else None,
            size_mb=b.size_mb if b else None, peak_mb=b.peak_memory_mb if b else None,
            noisy=bool(b and (b.decode_tokens_per_s.noisy or b.prefill_ms.noisy)),
        ))
    base = next((r for r in out if r.name == report.baseline), None)
    for r in out:
        if base and base.ppl and r.ppl:
            r.ppl_delta = r.ppl / base.ppl - 1
        if base and base.tps and r.tps:
            r.speedup = r.tps / base.tps
        if base and base.size_mb and r.size_mb:
            r.size_ratio = base.size_mb / r.size_mb
    return out


def frontier(rs: list[Row]) -> list[str]:
    """Names of ok variants no other variant beats on both perplexity (lower) and decode speed (higher)."""
    pts = [r for r in rs if r.status == "ok" and r.ppl is not None and r.tps is not None]
    keep = []
    for r in pts:
        dominated = any(o is not r and o.ppl <= r.ppl and o.tps >= r.tps and (o.ppl < r.ppl or o.tps > r.tps)
                        for o in pts)
        if not dominated:
            keep.append(r.name)
    return keep


def budget(report: Report) -> float:
    gates = report.recipe.get("gates") or {}
    value = gates.get("max_ppl_increase")
    return DEFAULT_PPL_BUDGET if value is None else float(value)


def recommend(report: Report) -> tuple[str, list[str]]:
    """-> (headline sentence, reasons each other variant was not chosen)."""
    rs = rows(report)
    limit = budget(report)
    base = next((r for r in rs if r.name == report.baseline), None)
    if base is None or base.status != "ok":
        return "No recommendation: the baseline did not finish, so nothing can be compared.", []
    if base.tps is None:
        return _accuracy_only(rs, base, limit)
    ok = [r for r in rs if r.status == "ok" and r.tps is not None and r.name != base.name]
    within = [r for r in ok if r.ppl_delta is None or r.ppl_delta <= limit]
    best = max(within, key=lambda r: r.tps, default=None)
    chosen = best if best is not None and best.tps > base.tps else base
    rejected = []
    for r in rs:
        if r is chosen or r is base:
            continue
        if r.status != "ok":
            rejected.append(f"{r.name}: {r.status} ({r.error or 'no reason recorded'})")
        elif r.ppl_delta is not None and r.ppl_delta > limit:
            rejected.append(f"{r.name}: perplexity {r.ppl_delta:+.1%}, over the {limit:.0%} budget")
        elif r.tps is not None:
            rejected.append(f"{r.name}: slower than {chosen.name} ({r.tps:.1f} vs {chosen.tps:.1f} tokens/s)")
    if chosen is base:
        return (f"Keep the baseline ({base.name}): no variant decoded faster while staying within "
                f"{limit:.0%} perplexity.", rejected)
    parts = [f"{best.speedup:.2f}x decode speed"]
    if best.size_ratio:
        parts.append(f"{best.size_ratio:.1f}x smaller" if best.size_ratio >= 1 else
                     f"{1 / best.size_ratio:.1f}x larger")
    if best.ppl_delta is not None:
        ci = f" ± {1.96 * best.ppl_se / base.ppl:.1%} (95%)" if best.ppl_se else ""
        parts.append(f"perplexity {best.ppl_delta:+.1%}{ci}")
    noisy = " Timings were noisy; rerun on a quiet machine before deciding." if best.noisy or base.noisy else ""
    return f"Ship {best.name}: {', '.join(parts)} vs {base.name}.{noisy}", rejected


def _accuracy_only(rs: list[Row], base: Row, limit: float) -> tuple[str, list[str]]:
    """Without a benchmark, say which variants keep accuracy; speed cannot be judged."""
    within = [r.name for r in rs if r is not base and r.status == "ok" and r.ppl_delta is not None
              and r.ppl_delta <= limit]
    rejected = [f"{r.name}: perplexity {r.ppl_delta:+.1%}, over the {limit:.0%} budget" for r in rs
                if r is not base and r.ppl_delta is not None and r.ppl_delta > limit]
    rejected += [f"{r.name}: {r.status} ({r.error or 'no reason recorded'})" for r in rs if r.status != "ok"]
    keep = ", ".join(within) if within else "none"
    return (f"No speed was measured (bench disabled), so no variant is recommended; within {limit:.0%} "
            f"perplexity of {base.name}: {keep}.", rejected)
