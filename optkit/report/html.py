"""report.html: one self-contained file (inline CSS and SVG, no script, no network) rendered from the jinja2
templates in report/templates/ with autoescaping on, so every string from models, recipes or errors is escaped
by the template. This module gathers what the page shows; charts.py places the marks of its charts."""

from __future__ import annotations

import math
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from optkit.report import hardware
from optkit.report.analysis import budget, fidelity, task_deltas
from optkit.report.charts import H, W, batch_curve, delta_panels, frontier_chart
from optkit.report.search import search_view
from optkit.report.served import agreements, tokenizer_checks
from optkit.report.speed import (
    SERVING_HEADERS,
    energy_text,
    fmt_stats,
    noisy_reasons,
    serving_notes,
    serving_rows,
    serving_shape,
)
from optkit.report.summary import HEADERS, table_rows
from optkit.report.wording import label, noisy_figures, recommendation, speedup_legend
from optkit.results import EvalResult, Report

__all__ = ["H", "W", "render_html"]


def facts(details: dict, prefix: str = "") -> str:
    """The scalar facts a step recorded (overall sparsity, export logit differences, fallback budget...),
    one level of nesting deep; per-layer tables stay in report.json."""
    out = []
    for key, value in details.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str, dict)):
            continue
        if isinstance(value, dict):
            if not prefix and len(value) <= 6 and not any(k.startswith("model.") for k in value):
                out.append(facts(value, f"{key}."))  # small summaries only; per-module maps stay in the JSON
            continue
        out.append(f"{prefix}{key} {value:.4g}" if isinstance(value, float) else f"{prefix}{key} {value}")
    return ", ".join(o for o in out if o)


def unit(a: EvalResult) -> str:
    """What an evaluation's n counts."""
    return {"token_perplexity": "tokens"}.get(a.metric, "positions" if a.task == "fidelity" else "documents")


@cache
def _templates() -> Environment:
    env = Environment(loader=PackageLoader("optkit.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(f=format, label=label, facts=facts, unit=unit, energy_text=energy_text)
    env.globals["nan"] = math.nan
    return env


def _speed(report: Report) -> dict[str, Any] | None:
    """The batch-size table, the roofline verdicts, the prompt-length and end-to-end latencies, and why any timing
    is marked noisy: why each variant is (not) faster."""
    done = [c for c in report.variants if c.bench]
    batches = sorted({p.batch_size for c in done for p in c.bench.throughput})
    if not done or not batches:
        return None
    lens = sorted({p.prompt_len for c in done for p in c.bench.prefill_by_prompt_len})
    lens = lens if len(lens) > 1 else []
    latency = []
    for c in done:
        ttft = {p.prompt_len: p.prefill_ms for p in c.bench.prefill_by_prompt_len}
        latency.append((c.name, [fmt_stats(ttft.get(n)) for n in lens], fmt_stats(c.bench.e2e_ms, ".0f")))
    speed = {c.name: {p.batch_size: p.decode_tokens_per_s for p in c.bench.throughput} for c in done}
    return {
        "batches": batches, "lens": lens, "latency": latency, "gen_len": done[0].bench.gen_len,
        "rows": [(c.name, [speed[c.name].get(b) for b in batches]) for c in done],
        "roof": next((c.bench.roofline for c in done if c.bench.roofline), None),
        "verdicts": [(c.name, "; ".join(c.bench.roofline.verdicts)) for c in done
                     if c.bench.roofline and c.bench.roofline.verdicts]
        + [(c.name, n) for c in done for n in c.bench.batch_notes],
        "noisy": [(c.name, r) for c in done for r in noisy_reasons(c.bench)],
    }


def _serving(report: Report) -> list[tuple[str, str, list[list[str]], list[str]]]:
    """Per variant with an online serving sweep: its request shape, rows and notes."""
    return [(c.name, serving_shape(r), serving_rows(r), serving_notes(r)) for c in report.variants
            if c.bench and (r := c.bench.serving)]


def render_html(report: Report) -> str:
    headers, body = hardware.add_column(report, HEADERS, table_rows(report))
    fid = [(c.name, f) for c in report.variants if "kl_mean" in (f := fidelity(c))]
    return _templates().get_template("report.html.j2").render(
        report=report, recommendation=recommendation(report), budget=budget(report), noisy=noisy_figures(report),
        frontier=frontier_chart(report), curve=batch_curve(report), deltas=delta_panels(report),
        headers=headers, body=body, legend=speedup_legend(report), hardware=hardware.legend(report),
        task_deltas=task_deltas(report), fidelity=fid, speed=_speed(report), checks=tokenizer_checks(report),
        agreements=agreements(report), search=search_view(report.search), serving=_serving(report),
        serving_headers=SERVING_HEADERS)
