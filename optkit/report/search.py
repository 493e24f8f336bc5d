"""The search's part of a report (report.search): where each candidate got and why it stopped, where the time went,
the per-tensor sensitivity the mixes came from; as terminal lines, and as what templates/search.html.j2 shows: a
plot of the search in speed-accuracy space (benchmarked candidates at their paired speed-up, the others at their
forecast; those that left faded), the candidates, the stages and the sensitivity table."""

from __future__ import annotations

from dataclasses import dataclass

from optkit.searchrecord import GroupSensitivity, SearchCandidate, SearchResult, Sensitivity, StageTime

W, H, PAD, RIGHT = 720, 360, 60, 200


def _speed(c: SearchCandidate, src_bound: float | None) -> tuple[float | None, bool]:
    """(x, measured): the paired speed-up against the source where benchmarked, else the sensitivity job's short
    timing, else bound / source's bound."""
    if c.kind == "source":
        return 1.0, True
    if c.speedup is not None:
        return c.speedup.median, True
    if c.timed_speedup:
        return c.timed_speedup, False
    if c.bound_tokens_per_s and src_bound:
        return c.bound_tokens_per_s / src_bound, False
    return None, False


def _ci(c: SearchCandidate) -> str:
    if c.ppl_delta is None:
        return "-"
    return (f"{c.ppl_delta:+.1%}" + (f" [{c.ppl_ci[0]:+.1%}, {c.ppl_ci[1]:+.1%}]" if c.ppl_ci else "")
            + (f" ({c.ppl_tokens} tokens)" if c.ppl_tokens else ""))


def _row(c: SearchCandidate, chosen: str | None) -> list[str]:
    sp = c.speedup
    speed = "1.00x" if c.kind == "source" else f"{sp.median:.2f}x [{sp.p10:.2f}-{sp.p90:.2f}]" if sp else "-"
    why = "chosen" if c.name == chosen else c.left or ("the baseline of every ratio" if c.kind == "source" else
                                                       "on the frontier, not chosen: the recommendation says why")
    return [c.name, c.kind, c.stage, _ci(c), speed, "-" if c.size_mb is None else f"{c.size_mb:.1f}", why]


HEAD = ["candidate", "kind", "reached", "Δppl vs source [95% CI]", "speed-up vs source (paired)", "size MB", "outcome"]


def search_lines(res: SearchResult | None) -> list[str]:
    """Terminal lines: the budgets and time, one row per candidate, the most and least sensitive groups."""
    from optkit.report.summary import columns

    if res is None:
        return []
    share = res.bookkeeping_s / res.wall_s if res.wall_s else 0.0
    out = [f"search of {res.source}: perplexity budget +{res.max_ppl_increase:.0%}, time budget "
           f"{res.time_budget_s / 60:.0f} min, objective {res.objective}; took {res.wall_s / 60:.1f} min, "
           f"the search's own bookkeeping {res.bookkeeping_s:.0f} s ({share:.1%})"]
    order = {"source": 0, "benchmark": 1, "perplexity": 2, "screen": 3, "forecast": 4}
    rows = sorted(res.candidates, key=lambda c: (c.name != res.chosen, order.get(c.stage, 5), c.ppl_delta or 9))
    out += columns(HEAD, [_row(c, res.chosen) for c in rows])
    out += [f"  {t.stage}: {t.candidates} candidates, {t.wall_s:.0f} s (inside the workers {t.worker_s:.0f} s; the "
            "rest: worker start-up, loading the source again, reports)" for t in res.stages]
    sens = res.sensitivity
    if sens and sens.groups:
        ranked = sorted(sens.groups, key=lambda g: g.rank)
        out.append(f"sensitivity ({len(ranked)} groups, each alone in {sens.low}, KL on {sens.tokens} calibration "
                   f"tokens); moved first: " + ", ".join(f"{g.group} {g.kl:.4f}" for g in ranked[:4])
                   + "; kept longest: " + ", ".join(f"{g.group} {g.kl:.4f}" for g in ranked[-4:]))
    if sens and sens.uniform_speedup:
        out.append("whole files timed head to head with the source (the forecast's order): "
                   + ", ".join(f"{k} {v:.2f}x" for k, v in sorted(sens.uniform_speedup.items(), key=lambda kv: -kv[1])))
    return out


@dataclass
class Dot:
    """One candidate in the plot: where, its label, and how it is drawn."""

    x: float
    y: float
    name: str
    shape: str  # source (filled square), chosen (filled circle), other (open circle)
    measured: bool  # False: its speed is the forecast's (dashed outline)
    faded: bool  # it left the search


@dataclass
class SearchPlot:
    dots: list[Dot]
    ticks: list[tuple[float, str]]  # x of each speed-up tick, its text
    budget_y: float
    budget_text: str
    line: str  # the finished candidates' polyline, "" with fewer than two
    width: int = W
    height: int = H
    left: int = PAD
    right: int = W - RIGHT
    bottom: int = H - PAD


@dataclass
class SearchView:
    """What the search section of report.html shows."""

    summary: str
    plot: SearchPlot | None
    head: list[str]
    rows: list[list[str]]
    stages: list[StageTime]
    sensitivity: Sensitivity | None
    groups: list[GroupSensitivity]


def search_plot(res: SearchResult) -> SearchPlot | None:
    """Perplexity change against speed-up vs the source, for every candidate with both; None without any."""
    src = next((c for c in res.candidates if c.kind == "source"), None)
    src_bound = src.bound_tokens_per_s if src else None
    pts = []
    for c in res.candidates:
        x, measured = _speed(c, src_bound)
        y = 0.0 if c.kind == "source" else c.ppl_delta
        if x is not None and y is not None:
            pts.append((c, x, y * 100, measured))
    if not pts:
        return None
    budget = res.max_ppl_increase * 100
    xs, ys = [p[1] for p in pts], [p[2] for p in pts] + [budget, 0.0]
    x0, x1, y0, y1 = min(xs) * 0.95, max(xs) * 1.05, min(ys) - 0.5, max(ys) + 0.5
    sx = lambda v: PAD + (v - x0) / ((x1 - x0) or 1) * (W - PAD - RIGHT)  # noqa: E731
    sy = lambda v: H - PAD - (v - y0) / ((y1 - y0) or 1) * (H - PAD - 20)  # noqa: E731
    front = sorted((p for p in pts if p[3] and p[0].left is None), key=lambda p: p[1])
    dots = [Dot(sx(x), sy(y), c.name, "source" if c.kind == "source" else "chosen" if c.name == res.chosen
                else "other", measured, c.left is not None) for c, x, y, measured in pts]
    return SearchPlot(dots=dots, ticks=[(sx(v), f"{v:.2f}x") for v in sorted({min(xs), max(xs)})],
                      budget_y=sy(budget), budget_text=f"budget +{budget:.0f}%",
                      line=" ".join(f"{sx(p[1]):.1f},{sy(p[2]):.1f}" for p in front) if len(front) > 1 else "")


def search_view(res: SearchResult | None) -> SearchView | None:
    """The search section's content, or None without a search."""
    if res is None:
        return None
    groups = sorted(res.sensitivity.groups, key=lambda g: g.rank) if res.sensitivity else []
    return SearchView(summary=search_lines(res)[0], plot=search_plot(res), head=HEAD,
                      rows=[_row(c, res.chosen) for c in res.candidates], stages=res.stages,
                      sensitivity=res.sensitivity, groups=groups)
