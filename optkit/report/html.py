"""report.html: one self-contained file (inline CSS and SVG, no script, no network) that prints well
and reads without colour. Every string from models, recipes or errors is escaped."""

from __future__ import annotations

import math
from html import escape

from optkit.report import analysis, hardware
from optkit.report.analysis import (
    budget,
    fidelity,
    frontier,
    label,
    noisy_figures,
    recommend,
    rows,
    speedup_legend,
    task_deltas,
)
from optkit.report.speed import energy_text
from optkit.report.summary import HEADERS, table_rows
from optkit.results import Report

CSS = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#111}
h1{font-size:1.5em} .rec{font-size:1.2em;border-left:4px solid #111;padding:.4em .8em;background:#f4f4f4}
.notice{border:2px solid #b45309;background:#fff7ed;padding:.4em .8em;margin:.6em 0}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{border:1px solid #999;padding:.3em .5em;text-align:right}
th:first-child,td:first-child{text-align:left} .failed{font-style:italic} small{color:#444}
table.env td{text-align:left}
svg text{font:12px system-ui,sans-serif} details{margin:.4em 0} code{font-size:.9em}
@media print{details{display:block} .rec{background:none}}
"""
W, H, PAD, RIGHT = 720, 400, 60, 170  # RIGHT: room for labels beside the right-most points


def _scale(lo: float, hi: float, a: float, b: float, log: bool):
    if log:
        lo, hi = math.log(lo), math.log(hi)
    span = (hi - lo) or 1.0
    return lambda v: a + ((math.log(v) if log else v) - lo) / span * (b - a)


def chart(report: Report) -> str:
    rs = [r for r in rows(report) if r.status == "ok" and r.ppl and r.tps and r.finite]  # NaN has no place
    if not rs:
        return "<p>No variant has both perplexity and decode speed, so there is no chart.</p>"
    front = set(frontier(rs))
    mixed = len(analysis.engines(rs)) > 1
    energy = {c.name: c.bench.energy.joules_per_token for c in report.variants
              if c.bench and c.bench.energy.status == "ok"}
    # the speed-up where every variant has one (paired where measured: what the table and frontier rank by)
    by_speedup = all(r.speedup is not None for r in rs)
    speed = {r.name: r.speedup if by_speedup else r.tps for r in rs}
    xs, ys = [speed[r.name] for r in rs], [r.ppl for r in rs]
    log_y = max(ys) / min(ys) > 3
    base = next((r for r in rs if r.name == report.baseline), None)
    limit = base.ppl * (1 + budget(report)) if base else None
    top = max(ys + ([limit] if limit else []))
    x = _scale(min(xs) * 0.9, max(xs) * 1.1, PAD, W - RIGHT, False)
    y = _scale(min(ys) * 0.95, top * 1.05, H - PAD, 20, log_y)
    parts = [f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - RIGHT}" y2="{H - PAD}" stroke="#000"/>',
             f'<line x1="{PAD}" y1="20" x2="{PAD}" y2="{H - PAD}" stroke="#000"/>',
             f'<text x="{(W + PAD) / 2}" y="{H - 20}" text-anchor="middle">'
             f'{escape(f"decode speed-up vs {report.baseline}" if by_speedup else "decode tokens/s")} '
             '(higher is better) →</text>',
             f'<text transform="translate(16,{H / 2}) rotate(-90)" text-anchor="middle">'
             f'← perplexity{" (log scale)" if log_y else ""} (lower is better)</text>']
    for v in (min(xs), max(xs)):
        parts.append(f'<text x="{x(v):.1f}" y="{H - PAD + 16}" text-anchor="middle">'
                     f'{f"{v:.2f}x" if by_speedup else f"{v:.1f}"}</text>')
    for v in (min(ys), max(ys)):
        parts.append(f'<text x="{PAD - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    if limit:
        parts.append(f'<line class="budget" x1="{PAD}" y1="{y(limit):.1f}" x2="{W - RIGHT}" y2="{y(limit):.1f}" '
                     'stroke="#777" stroke-dasharray="2,3"/>'
                     f'<text x="{W - RIGHT + 4}" y="{y(limit) + 4:.1f}" fill="#444">'
                     f'budget +{budget(report):.0%}</text>')
    pts = sorted((r for r in rs if r.name in front), key=lambda r: speed[r.name])
    if len(pts) > 1:
        path = " ".join(f"{x(speed[r.name]):.1f},{y(r.ppl):.1f}" for r in pts)
        parts.append(f'<polyline class="frontier" points="{path}" fill="none" stroke="#000" '
                     'stroke-dasharray="5,4"/>')
    placed: list[tuple[float, float]] = []
    wide = W
    for r in sorted(rs, key=lambda r: (r.ppl, speed[r.name])):
        cx, cy = x(speed[r.name]), y(r.ppl)
        ly = cy - 8
        while any(abs(ly - py) < 14 and abs(cx - px) < 150 for px, py in placed):
            ly += 14  # stack labels of nearby points instead of printing them over each other
        placed.append((cx, ly))
        on = r.name in front
        shape = (f'<rect x="{cx - 5:.1f}" y="{cy - 5:.1f}" width="10" height="10" fill="#000"/>'
                 if r.name == report.baseline else
                 f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{"#000" if on else "#fff"}" stroke="#000"/>')
        size = f", {r.size_mb:.0f} MB" if r.size_mb else ""
        size = (f" [{analysis.engine_label(r.engine)}]" if mixed and r.engine else "") + size
        joules = energy.get(r.name)
        size += f", {joules:.3g} J/token" if joules else ""
        text = r.name + size
        wide = max(wide, cx + 8 + 7 * len(text))  # ~7 px a character
        parts.append(f'<g class="point">{shape}<text x="{cx + 8:.1f}" y="{ly:.1f}">{escape(text)}</text></g>')
    # opened last: as wide as the labels beside the right-most points need, so none is cut off at the edge
    svg = (f'<svg id="chart" role="img" viewBox="0 0 {wide:.0f} {H}" width="{wide:.0f}" height="{H}" '
           'aria-label="perplexity versus decode speed">')
    legend = ("<p><small>■ baseline · ● on the Pareto frontier (dashed line) · ○ dominated: another variant "
              "at least as fast is not measurably less accurate (paired 95% CI) · dotted line: the perplexity "
              "budget. Labels show size on disk and, where a counter exists, energy per decoded token."
              "</small></p>")
    return svg + "".join(parts) + "</svg>" + legend


def _facts(details: dict, prefix: str = "") -> str:
    """The scalar facts a step recorded (overall sparsity, export logit differences, fallback budget...),
    one level of nesting deep; per-layer tables stay in report.json."""
    out = []
    for key, value in details.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str, dict)):
            continue
        if isinstance(value, dict):
            if not prefix and len(value) <= 6 and not any(k.startswith("model.") for k in value):
                out.append(_facts(value, f"{key}."))  # small summaries only; per-module maps stay in the JSON
            continue
        out.append(f"{prefix}{key} {value:.4g}" if isinstance(value, float) else f"{prefix}{key} {value}")
    return ", ".join(o for o in out if o)


def _details(report: Report) -> str:
    out = []
    for c in report.variants:
        items = []
        for s in c.steps:
            skipped = "".join(f"<li><code>{escape(m.module)}</code>: {escape(m.reason)}</li>"
                              for m in s.modules_skipped)
            facts = _facts(s.details)
            items.append(f"<li><code>{escape(s.method)}</code> {escape(str(s.params or ''))}: "
                         f"{len(s.modules_changed)} modules changed, {len(s.modules_skipped)} skipped, "
                         f"{s.seconds:.1f}s" + (f"; {escape(facts)}" if facts else "")
                         + (f"<ul>{skipped}</ul>" if skipped else "") + "</li>")
        for w in c.warnings:
            items.append(f"<li>warning: {escape(w)}</li>")
        if c.error:
            items.append(f"<li>error: {escape(c.error)}</li>")
        if c.bench:
            energy = escape(energy_text(c.bench.energy))
            items.append(f"<li>energy: {energy}</li><li>peak memory: {escape(c.bench.peak_memory_source or '')}</li>")
        for a in c.accuracy:
            items.append(_accuracy_item(a))
        body = "".join(items) or "<li>no steps (the checkpoint as loaded)</li>"
        out.append(f"<details><summary>{escape(c.name)} ({escape(c.status)})</summary><ul>{body}</ul></details>")
    return "".join(out)


def _accuracy_item(a) -> str:
    """One evaluation result in the details list, with its unit of n and where it came from."""
    unit = {"token_perplexity": "tokens"}.get(a.metric, "positions" if a.task == "fidelity" else "documents")
    src = a.details.get("source") or a.details.get("data") or ""
    extra = " (cached result)" if a.details.get("cached") else ""
    se = f" ±{a.stderr:.4g}" if a.stderr else ""
    return (f"<li>{escape(a.task)} {escape(label(a.metric))}: {a.value:.4g}{se} over {a.n} {unit}"
            f"{': ' + escape(str(src)) if src else ''}{extra}</li>")


def _accuracy_story(report: Report) -> str:
    """Per-task deltas with paired CIs, flips and McNemar p, and fidelity (KL, top-1) against the baseline."""
    deltas = task_deltas(report)
    out = ""
    if deltas:
        body = ""
        for d in deltas:
            ci = f" [{d.ci[0]:+.3f}, {d.ci[1]:+.3f}]" if d.ci else ""
            flips = "-" if d.right_to_wrong is None else f"{d.right_to_wrong} / {d.wrong_to_right}"
            p = "-" if d.mcnemar_p is None else f"{d.mcnemar_p:.3g}"
            body += (f"<tr><td>{escape(d.variant)}</td><td>{escape(d.task)} {escape(label(d.metric))}</td>"
                     f"<td>{d.value:.3f}</td><td>{d.base_value:.3f}</td><td>{d.delta:+.3f}{ci}</td><td>{flips}</td>"
                     f"<td>{p}</td><td>{d.n}</td></tr>")
        out += ("<h2>Task accuracy vs the baseline</h2><table id=\"task-deltas\"><thead><tr><th>variant</th>"
                "<th>task metric</th><th>value</th><th>baseline</th><th>Δ [95% paired CI]</th>"
                "<th>right→wrong / wrong→right</th><th>McNemar p</th><th>n</th></tr></thead>"
                f"<tbody>{body}</tbody></table><p><small>Same documents for every variant: Δ and its CI come from "
                "per-document differences; flips count documents the baseline got right and this variant wrong, "
                "and the other way round; McNemar's exact p-value asks whether the flips lean one way by more "
                "than chance.</small></p>")
    fid = [(c.name, fidelity(c)) for c in report.variants]
    fid = [(n, f) for n, f in fid if "kl_mean" in f]
    if fid:
        body = "".join(f"<tr><td>{escape(n)}</td><td>{f['kl_mean']:.4g}</td><td>{f.get('kl_p95', math.nan):.4g}</td>"
                       f"<td>{f.get('top1_agreement', math.nan):.2%}</td></tr>" for n, f in fid)
        out += ("<h2>Fidelity to the baseline</h2><table id=\"fidelity\"><thead><tr><th>variant</th>"
                "<th>KL mean (nats)</th><th>KL p95 (nats)</th><th>top-1 agreement</th></tr></thead>"
                f"<tbody>{body}</tbody></table><p><small>KL(baseline ‖ variant) of the next-token distribution at "
                "every position of a fixed prompt set, and how often both pick the same most likely token. "
                "0 and 100% mean the variant predicts exactly like the baseline.</small></p>")
    return out


def _speed_story(report: Report) -> str:
    """The batch-size curve and the roofline verdicts: why each variant is (not) faster."""
    from optkit.report.speed import speed_html

    done = [c for c in report.variants if c.bench]
    batches = sorted({p.batch_size for c in done for p in c.bench.throughput})
    if not done or not batches:
        return ""
    head = "".join(f"<th>batch {b}</th>" for b in batches)
    body = ""
    for c in done:
        speed = {p.batch_size: p.decode_tokens_per_s for p in c.bench.throughput}
        cells = "".join(f"<td>{speed[b].median:.1f}{' (noisy)' if speed[b].noisy else ''}</td>" if b in speed
                        else "<td>-</td>" for b in batches)
        body += f"<tr><td>{escape(c.name)}</td>{cells}</tr>"
    verdicts = "".join(f"<li><b>{escape(c.name)}</b>: {escape('; '.join(c.bench.roofline.verdicts))}</li>"
                       for c in done if c.bench.roofline and c.bench.roofline.verdicts)
    verdicts += "".join(f"<li><b>{escape(c.name)}</b>: {escape(n)}</li>" for c in done for n in c.bench.batch_notes)
    roof = next((c.bench.roofline for c in done if c.bench.roofline), None)
    peaks = (f"<p><small>Measured on this device: memory bandwidth {roof.bandwidth_gb_s:.1f} GB/s (copy), "
             f"matmul {roof.matmul_gflop_s:.0f} GFLOP/s ({escape(roof.matmul_dtype)}).</small></p>") if roof else ""
    return (f"<h2>Why is it (not) faster?</h2><p>Decode tokens/s (all sequences) by batch size:</p>"
            f"<table><thead><tr><th>variant</th>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"{peaks}<ul>{verdicts}</ul>{speed_html(report)}")


def render_html(report: Report) -> str:
    headline, rejected = recommend(report)
    headers, cells = hardware.add_column(report, HEADERS, table_rows(report))
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{escape(r[1])}">' + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>"
        for r in cells)
    env = report.environment
    env_rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>"
                       for k, v in env.model_dump().items() if v is not None)
    rej = "".join(f"<li>{escape(r)}</li>" for r in rejected)
    legend = speedup_legend(report)
    noisy = "".join(f"<li>{escape(n)}</li>" for n in noisy_figures(report))
    notice = (f'<div class="notice" id="noisy-notice"><b>Timing was noisy:</b> figures behind this recommendation '
              f'are uncertain; rerun on a quiet machine before deciding.<ul>{noisy}</ul></div>') if noisy else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>optkit report: {escape(report.run)}</title>
<style>{CSS}</style></head><body>
<h1>optkit report: {escape(report.run)}</h1>
<p><small>checkpoint {escape(report.checkpoint)} · baseline {escape(report.baseline)} · {escape(report.created)}
· quality budget: perplexity within +{budget(report):.0%}</small></p>
<p class="rec" id="recommendation">{escape(headline)}</p>
{notice}
{f"<p>Not chosen:</p><ul>{rej}</ul>" if rej else ""}
<h2>Accuracy vs speed</h2>{chart(report)}
<h2>Variants</h2>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p><small>Token perplexity (optkit's own sliding window over model tokens; not lm-eval's word perplexity
or bits per byte, which count words or bytes) ± its standard error; Δ and speed-up are relative to the
baseline, with the 95% CI of the paired perplexity change (same tokens, per-block differences); decode is batch 1,
median of repeated runs; * marks the Pareto frontier; (noisy) marks timings taken on a busy machine.</small></p>
{f"<p><small>{escape(legend)}.</small></p>" if legend else ""}
{hardware.legend_html(report)}
{_accuracy_story(report)}
{_speed_story(report)}
<h2>Details</h2>{_details(report)}
<h2>Environment</h2><table class="env">{env_rows}</table>
</body></html>
"""
