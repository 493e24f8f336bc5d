"""Where each mark of report.html's charts goes, computed from the report; the SVG markup is the template's
(templates/charts.html.j2), which escapes every name. Black and grey only, with shapes and dash patterns instead
of colours, so every chart reads in print and without colour. Labels are placed at ~7 px a character (12 px
system-ui), and a chart widens where its longest label needs it instead of cutting it off."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from optkit.report.analysis import budget, engines, frontier, rows, task_deltas
from optkit.report.wording import engine_label, label
from optkit.results import Report

W, H, PAD, RIGHT = 720, 400, 60, 170  # RIGHT: room for labels beside the right-most points
CHAR = 7  # px a label character takes
MARKERS = ("circle", "square", "triangle", "diamond")
DASHES = ("", "6,3", "2,3", "8,3,2,3")


@dataclass
class Mark:
    """A text at a place."""

    x: float
    y: float
    text: str
    anchor: str = "start"


@dataclass
class Point:
    x: float
    y: float
    label: Mark
    shape: str  # baseline (filled square), front (filled circle), other (open circle)


@dataclass
class Frontier:
    width: float
    x_title: str
    y_title: str
    ticks: list[Mark]
    budget: Mark | None  # the perplexity budget's line (at its y) and label
    line: str  # the frontier's polyline points, "" with fewer than two
    points: list[Point]
    height: int = H
    left: int = PAD
    right: int = W - RIGHT
    bottom: int = H - PAD


def _scale(lo: float, hi: float, a: float, b: float, log: bool):
    if log:
        lo, hi = math.log(lo), math.log(hi)
    span = (hi - lo) or 1.0
    return lambda v: a + ((math.log(v) if log else v) - lo) / span * (b - a)


def _stack(placed: list[tuple[float, float]], x: float, y: float) -> float:
    """y for a label at (x, y) that overlaps none placed before it (labels of nearby points stack downwards)."""
    while any(abs(y - py) < 14 and abs(x - px) < 150 for px, py in placed):
        y += 14
    placed.append((x, y))
    return y


def frontier_chart(report: Report) -> Frontier | None:
    """Perplexity against decode speed-up (paired where measured: what the table and frontier rank by), or tokens/s
    where some variant has no speed-up; None without a variant that has both."""
    rs = [r for r in rows(report) if r.status == "ok" and r.ppl and r.tps and r.finite]  # NaN has no place
    if not rs:
        return None
    front = set(frontier(rs))
    mixed = len(engines(rs)) > 1
    energy = {c.name: c.bench.energy.joules_per_token for c in report.variants
              if c.bench and c.bench.energy.status == "ok"}
    by_speedup = all(r.speedup is not None for r in rs)
    speed = {r.name: r.speedup if by_speedup else r.tps for r in rs}
    xs, ys = [speed[r.name] for r in rs], [r.ppl for r in rs]
    log_y = max(ys) / min(ys) > 3
    base = next((r for r in rs if r.name == report.baseline), None)
    limit = base.ppl * (1 + budget(report)) if base else None
    top = max(ys + ([limit] if limit else []))
    x = _scale(min(xs) * 0.9, max(xs) * 1.1, PAD, W - RIGHT, False)
    y = _scale(min(ys) * 0.95, top * 1.05, H - PAD, 20, log_y)
    ticks = [Mark(x(v), H - PAD + 16, f"{v:.2f}x" if by_speedup else f"{v:.1f}", "middle") for v in (min(xs), max(xs))]
    ticks += [Mark(PAD - 6, y(v) + 4, f"{v:.2f}", "end") for v in (min(ys), max(ys))]
    line = " ".join(f"{x(speed[r.name]):.1f},{y(r.ppl):.1f}"
                    for r in sorted((r for r in rs if r.name in front), key=lambda r: speed[r.name]))
    placed: list[tuple[float, float]] = []
    points, wide = [], float(W)
    for r in sorted(rs, key=lambda r: (r.ppl, speed[r.name])):
        cx, cy = x(speed[r.name]), y(r.ppl)
        extra = (f" [{engine_label(r.engine)}]" if mixed and r.engine else "") + \
            (f", {r.size_mb:.0f} MB" if r.size_mb else "") + \
            (f", {energy[r.name]:.3g} J/token" if energy.get(r.name) else "")
        text = r.name + extra
        wide = max(wide, cx + 8 + CHAR * len(text))
        shape = "baseline" if r.name == report.baseline else "front" if r.name in front else "other"
        points.append(Point(cx, cy, Mark(cx + 8, _stack(placed, cx, cy - 8), text), shape))
    return Frontier(
        width=wide, points=points, ticks=ticks, line=line if len(front) > 1 else "",
        x_title=(f"{rs[0].objective} speed-up vs {report.baseline}" if by_speedup else "decode tokens/s")
        + " (higher is better) →",
        y_title=f"← perplexity{' (log scale)' if log_y else ''} (lower is better)",
        budget=Mark(W - RIGHT + 4, y(limit), f"budget +{budget(report):.0%}") if limit else None)


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]
    whiskers: list[tuple[float, float, float]]  # x, y at p90, y at p10 (the spread of the timing)
    marker: str
    dash: str
    label: Mark


@dataclass
class Curve:
    width: float
    height: int
    left: int
    right: int
    bottom: int
    x_title: str
    y_title: str
    ticks: list[Mark]
    series: list[Series] = field(default_factory=list)


def batch_curve(report: Report) -> Curve | None:
    """Decode tokens/s (all sequences) by batch size, one line per benchmarked variant, on a log2 batch axis; None
    unless some variant was benchmarked at more than one batch size."""
    done = [c for c in report.variants if c.bench and c.bench.throughput]
    batches = sorted({p.batch_size for c in done for p in c.bench.throughput})
    if len(batches) < 2:
        return None
    high = max(p.decode_tokens_per_s.p90 or p.decode_tokens_per_s.median for c in done for p in c.bench.throughput)
    left, right, height, bottom = PAD, W - RIGHT, 320, 320 - 44
    x = _scale(batches[0], batches[-1], left + 10, right - 10, True)
    y = _scale(0, high * 1.08 or 1.0, bottom, 20, False)
    ticks = [Mark(x(b), bottom + 16, str(b), "middle") for b in batches]
    ticks += [Mark(left - 6, y(v) + 4, f"{v:.0f}", "end") for v in (0, high / 2, high)]
    curve = Curve(width=W, height=height, left=left, right=right, bottom=bottom, ticks=ticks,
                  x_title="batch size (sequences decoded together, log scale) →", y_title="decode tokens/s (all "
                  "sequences) →")
    placed: list[tuple[float, float]] = []
    for i, c in enumerate(done):
        pts = sorted(c.bench.throughput, key=lambda p: p.batch_size)
        xy = [(x(p.batch_size), y(p.decode_tokens_per_s.median)) for p in pts]
        whiskers = [(x(p.batch_size), y(p.decode_tokens_per_s.p90), y(p.decode_tokens_per_s.p10)) for p in pts
                    if p.decode_tokens_per_s.p10 is not None and p.decode_tokens_per_s.p90 is not None]
        end_x, end_y = xy[-1]
        text = c.name + (" (noisy)" if any(p.decode_tokens_per_s.noisy for p in pts) else "")
        curve.width = max(curve.width, end_x + 10 + CHAR * len(text))
        mark = Mark(end_x + 10, _stack(placed, end_x, end_y + 4), text)
        curve.series.append(Series(c.name, xy, whiskers, MARKERS[i % len(MARKERS)], DASHES[i % len(DASHES)], mark))
    return curve


@dataclass
class DeltaRow:
    y: float
    name: str
    x: float
    lo: float | None  # the 95% CI's ends, None without paired samples
    hi: float | None
    text: str


@dataclass
class DeltaPanel:
    """One task metric (or token perplexity): each variant's change vs the baseline with its paired 95% CI."""

    title: str
    zero: float
    ticks: list[Mark]
    rows: list[DeltaRow]
    height: float
    width: float
    left: float  # the plot's x range; variant names end left of it, the figures start right of it
    right: float


ROW, PLOT = 22, 350  # px per variant, px of the plot


def _panel(title: str, items: list[tuple[str, float, tuple[float, float] | None]], fmt) -> DeltaPanel:
    """items: (variant, delta, CI or None); fmt: a value as the panel prints it."""
    reach = max([abs(d) for _, d, _ in items] + [abs(v) for _, _, ci in items if ci for v in ci]) or 1e-9
    texts = [fmt(d) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else " (no paired CI)") for _, d, ci in items]
    left = max(200, 16 + CHAR * max(len(name) for name, _, _ in items))
    right = left + PLOT
    x = _scale(-reach * 1.1, reach * 1.1, left, right, False)
    rows_ = [DeltaRow(34 + i * ROW, name, x(delta), x(ci[0]) if ci else None, x(ci[1]) if ci else None, text)
             for i, ((name, delta, ci), text) in enumerate(zip(items, texts))]
    bottom = 34 + len(items) * ROW
    return DeltaPanel(title=title, zero=x(0), rows=rows_, height=bottom + 24, left=left, right=right,
                      ticks=[Mark(x(v), bottom + 14, fmt(v), "middle") for v in (-reach, 0.0, reach)],
                      width=max(W, right + 10 + CHAR * max(len(t) for t in texts), CHAR * len(title)))


def delta_panels(report: Report) -> list[DeltaPanel]:
    """Token perplexity (relative change) and each lm-eval task metric (absolute change), every variant against the
    baseline on the same tokens or documents; a panel per metric, since their units differ."""
    panels = []
    ppl = [(r.name, r.ppl_delta, r.ppl_delta_ci) for r in rows(report)
           if r.name != report.baseline and r.status == "ok" and r.ppl_delta is not None]
    if ppl:
        panels.append(_panel("token perplexity vs the baseline, relative (lower is better)", ppl,
                             lambda v: f"{v:+.1%}"))
    base = next((c for c in report.variants if c.name == report.baseline), None)
    groups: dict[tuple[str, str], list] = {}
    for d in task_deltas(report):
        groups.setdefault((d.task, d.metric), []).append((d.variant, d.delta, d.ci))
    for (task, metric), items in groups.items():
        ref = base.metric(task, metric) if base else None
        better = "" if ref is None else " (higher is better)" if ref.higher_is_better else " (lower is better)"
        panels.append(_panel(f"{task} {label(metric)} vs the baseline{better}", items, lambda v: f"{v:+.3f}"))
    return panels
