"""The search's part of a report (report.search): where each candidate got and why it stopped, where the time went,
the per-tensor sensitivity the mixes came from; as terminal lines and as HTML with a plot of the search in
speed-accuracy space (benchmarked candidates at their paired speed-up, the others at their forecast, faded)."""

from __future__ import annotations

from html import escape

from optkit.results import SearchCandidate, SearchResult

W, H, PAD, RIGHT = 720, 360, 60, 200


def _speed(c: SearchCandidate, src_bound: float | None) -> tuple[float | None, bool]:
    """(x, measured): the paired speed-up against the source where benchmarked, else bound / source's bound."""
    if c.kind == "source":
        return 1.0, True
    if c.speedup is not None:
        return c.speedup.median, True
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
    why = "chosen" if c.name == chosen else (c.left or "finished")
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
    return out


def _plot(res: SearchResult) -> str:
    src = next((c for c in res.candidates if c.kind == "source"), None)
    src_bound = src.bound_tokens_per_s if src else None
    pts = []
    for c in res.candidates:
        x, measured = _speed(c, src_bound)
        y = 0.0 if c.kind == "source" else c.ppl_delta
        if x is not None and y is not None:
            pts.append((c, x, y * 100, measured))
    if not pts:
        return ""
    budget = res.max_ppl_increase * 100
    xs, ys = [p[1] for p in pts], [p[2] for p in pts] + [budget, 0.0]
    x0, x1, y0, y1 = min(xs) * 0.95, max(xs) * 1.05, min(ys) - 0.5, max(ys) + 0.5
    sx = lambda v: PAD + (v - x0) / ((x1 - x0) or 1) * (W - PAD - RIGHT)  # noqa: E731
    sy = lambda v: H - PAD - (v - y0) / ((y1 - y0) or 1) * (H - PAD - 20)  # noqa: E731
    parts = [f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - RIGHT}" y2="{H - PAD}" stroke="#000"/>',
             f'<line x1="{PAD}" y1="20" x2="{PAD}" y2="{H - PAD}" stroke="#000"/>',
             f'<line class="budget" x1="{PAD}" y1="{sy(budget):.1f}" x2="{W - RIGHT}" y2="{sy(budget):.1f}" '
             f'stroke="#777" stroke-dasharray="2,3"/><text x="{W - RIGHT + 4}" y="{sy(budget) + 4:.1f}">budget '
             f'+{budget:.0f}%</text>',
             f'<text x="{(W + PAD - RIGHT) / 2}" y="{H - 20}" text-anchor="middle">speed-up vs the source (paired; '
             'faded: forecast) →</text>',
             f'<text transform="translate(16,{H / 2}) rotate(-90)" text-anchor="middle">← Δ perplexity %</text>']
    for v in (min(xs), max(xs)):
        parts.append(f'<text x="{sx(v):.1f}" y="{H - PAD + 16}" text-anchor="middle">{v:.2f}x</text>')
    front = sorted((p for p in pts if p[3] and p[0].left is None), key=lambda p: p[1])
    if len(front) > 1:
        parts.append('<polyline class="frontier" fill="none" stroke="#000" stroke-dasharray="5,4" points="'
                     + " ".join(f"{sx(p[1]):.1f},{sy(p[2]):.1f}" for p in front) + '"/>')
    for c, x, y, measured in pts:
        faded = c.left is not None
        style = f'opacity="{0.35 if faded else 1}"'
        fill = "#000" if c.name == res.chosen else "#fff"
        shape = (f'<rect x="{sx(x) - 5:.1f}" y="{sy(y) - 5:.1f}" width="10" height="10" fill="#000"/>'
                 if c.kind == "source" else f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{fill}" '
                 f'stroke="#000" stroke-dasharray="{"" if measured else "2,2"}"/>')
        label = f'<text x="{sx(x) + 8:.1f}" y="{sy(y) - 6:.1f}">{escape(c.name)}</text>' if not faded else ""
        parts.append(f'<g class="{"eliminated" if faded else "candidate"}" {style}>{shape}{label}</g>')
    return (f'<svg id="search-plot" role="img" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
            f'aria-label="search candidates: perplexity change versus speed-up">{"".join(parts)}</svg>'
            "<p><small>■ the source · ● chosen · ○ finished · faded: left the search (the table says where and why) · "
            "dashed circle: speed from the forecast (bytes per token), not measured · dashed line: candidates that "
            "finished · dotted line: the perplexity budget.</small></p>")


def search_html(res: SearchResult | None) -> str:
    """The search section of report.html: summary, plot, candidates, stages and the sensitivity table."""
    if res is None:
        return ""
    lines = search_lines(res)
    body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in _row(c, res.chosen)) + "</tr>"
                   for c in res.candidates)
    head = "".join(f"<th>{escape(h)}</th>" for h in HEAD)
    stages = "".join(f"<li>{escape(t.stage)}: {t.candidates} candidates, {t.wall_s:.0f} s (workers "
                     f"{t.worker_s:.0f} s)</li>" for t in res.stages)
    return (f'<h2 id="search">Search</h2><p>{escape(lines[0])}</p>{_plot(res)}'
            f'<table id="search-candidates"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f"<ul>{stages}</ul>{sensitivity_html(res)}")


def sensitivity_html(res: SearchResult) -> str:
    sens = res.sensitivity
    if sens is None or not sens.groups:
        return ""
    rows = "".join(
        f"<tr><td>{g.rank}</td><td>{escape(g.group)}</td><td>{g.tensors}</td><td>{g.weights / 1e6:.2f}</td>"
        f"<td>{g.bytes_saved / 2**20:+.2f}</td><td>{g.kl:.5f}</td><td>{g.kl_se or 0:.5f}</td></tr>"
        for g in sorted(sens.groups, key=lambda g: g.rank))
    return (f'<h3>Per-tensor sensitivity</h3><p><small>Each group alone in {escape(sens.low)}, every other tensor as '
            f'in the source{", importance matrix on" if sens.imatrix else ""}; KL(source ‖ group quantized) per '
            f'token on {sens.tokens} calibration tokens (WikiText-2 validation unless set). Mixes move groups to '
            f'{escape(sens.low)} in this order (least KL per byte saved first).</small></p>'
            '<table id="sensitivity"><thead><tr><th>order</th><th>group</th><th>tensors</th><th>M weights</th>'
            '<th>MB saved</th><th>KL (nats)</th><th>± se</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")
