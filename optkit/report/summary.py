"""Plain-text forms of a report: the terminal table and markdown for pull-request comments."""

from __future__ import annotations

from optkit.errors import BadInput
from optkit.report import hardware
from optkit.report.analysis import compare, engines, fidelity, frontier, row, rows, task_deltas
from optkit.report.wording import engine_label, label, recommend, speedup_legend
from optkit.results import Report

HEADERS = ["variant", "status", "token perplexity", "Δppl [95% CI]", "decode tok/s", "speed-up", "prefill ms",
           "size MB", "peak MB"]


FRONTIER_LEGEND = ("* on the Pareto frontier: a lower perplexity than every faster variant on it (paired 95% CI "
                   "where scored on the same tokens)")


def _fmt(v, spec: str, suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def table_rows(report: Report) -> list[list[str]]:
    front = set(frontier(rows(report)))
    mixed = len(engines(rows(report))) > 1  # name the engine when variants ran in more than one
    out = []
    for r in rows(report):
        ppl = _fmt(r.ppl, ".3f") + (f" ±{r.ppl_se:.2f}" if r.ppl_se else "")
        name = r.name + (f" [{engine_label(r.engine)}]" if mixed and r.engine else "") \
            + (" (baseline)" if r.name == report.baseline else "") + (" *" if r.name in front else "")
        lo_hi = r.ppl_delta_ci if r.name != report.baseline else None
        ci = f" [{lo_hi[0]:+.1%}, {lo_hi[1]:+.1%}]" if lo_hi else ""
        caveat = f" (not its serving speed: {r.speed_caveat})" if r.speed_caveat and r.tps is not None else ""
        delta = "other tokens" if r.ppl_note else _fmt(r.ppl_delta, "+.1%") + ci
        out.append([name, r.status, ppl, delta,
                    _fmt(r.tps, ".1f") + (" (noisy)" if r.tps_noisy else "") + caveat,
                    _fmt(r.speedup, ".2f", "x") + (" (noisy)" if r.speedup_noisy else "")
                    + (" (not ranked)" if caveat and r.speedup is not None else ""),
                    _fmt(r.prefill_ms, ".1f") + (" (noisy)" if r.prefill_noisy else ""),
                    _fmt(r.size_mb, ".1f"), _fmt(r.peak_mb, ".0f")])
    return out


def task_columns(report: Report) -> list[tuple[str, str]]:
    """(task, metric) for each lm-eval task in the report: its acc, else its first metric; one column each."""
    cols: dict[str, str] = {}
    for c in report.variants:
        for r in c.accuracy:
            if r.metric != "token_perplexity" and r.task != "fidelity" and (r.task not in cols or r.metric == "acc"):
                cols[r.task] = r.metric
    return list(cols.items())


def full_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """HEADERS plus one column per task metric (html keeps the fixed columns; report.json has every metric)."""
    cols = task_columns(report)
    body = table_rows(report)
    flips = {(d.variant, d.task, d.metric): d for d in task_deltas(report) if d.right_to_wrong is not None}
    fid = {c.name: fidelity(c) for c in report.variants}
    for cells, c in zip(body, report.variants):
        for task, metric in cols:
            r = c.metric(task, metric)
            d = flips.get((c.name, task, metric))
            cells.append("-" if r is None else f"{r.value:.3f}" + (f" ±{r.stderr:.3f}" if r.stderr else "")
                         + (f" (-{d.right_to_wrong}/+{d.wrong_to_right})" if d else ""))
        if any(fid.values()):
            f = fid[c.name]
            cells.append(f"{f['kl_mean']:.4f} / {f['top1_agreement']:.1%}" if "kl_mean" in f and "top1_agreement" in f
                         else "-")
    headers = HEADERS + [f"{task} {label(metric)}" for task, metric in cols]
    return hardware.add_column(report, headers + (["KL / top-1 vs baseline"] if any(fid.values()) else []), body)


def columns(headers: list[str], body: list[list[str]]) -> list[str]:
    """A terminal table: left-aligned columns as wide as their widest cell, a dashed rule under the headers."""
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)]


def text_table(report: Report) -> str:
    headers, body = full_table(report)
    out = columns(headers, body)
    headline, rejected = recommend(report)
    legend = speedup_legend(report)
    out += ["", FRONTIER_LEGEND, *([legend] if legend else []), headline]
    if any(task_deltas(report)):
        out.insert(-1, "(-a/+b): samples the baseline got right and this variant wrong / the other way round")
    out += [f"  not chosen: {r}" for r in rejected]
    out += ["", *hardware.legend(report)] if hardware.several(report) else []
    from optkit.report.speed import speed_lines

    speed = speed_lines(report)  # TTFT by prompt length and end-to-end latency, compactly
    out += ["", *speed] if speed else []
    from optkit.report.served import served_lines

    served = served_lines(report)
    out += ["", *served] if served else []
    return "\n".join(out)


def markdown(report: Report) -> str:
    headline, rejected = recommend(report)
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = [f"### optkit report: {esc(report.run)}", "", f"**{esc(headline)}**", ""]
    headers, body = full_table(report)
    out += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in body]
    legend = speedup_legend(report)
    out += ["", f"_{esc(legend)}_"] if legend else []
    if rejected:
        out += ["", "Not chosen:", *(f"- {esc(r)}" for r in rejected)]
    out += ["", *(esc(ln) for ln in hardware.legend(report))] if hardware.several(report) else []
    env = report.environment
    out += ["", f"_{esc(env.device)} · {esc(env.device_name or '')} · torch {env.torch} · optkit {env.optkit}_"]
    return "\n".join(out)


def versus(report: Report, name: str) -> str:
    """Every variant's perplexity against another variant's instead of the baseline's, paired on the same
    blocks of tokens (e.g. GPTQ vs round-to-nearest at one scheme): which one is lower, and whether the 95% CI
    tells them apart."""
    by_name = {c.name: c for c in report.variants}
    if name not in by_name:
        raise BadInput(f"--vs {name!r}: no such variant in this report; pick one of {', '.join(by_name)}")
    ref = row(by_name[name])
    if ref.ppl is None:
        raise BadInput(f"--vs {name!r}: that variant has no token perplexity ({ref.status}); pick one that has")
    body = []
    for c in report.variants:
        if c.name == name:
            continue
        r = compare(ref, row(c))
        lo_hi = r.ppl_delta_ci
        verdict = ("-" if r.ppl is None else "not paired (other tokens)" if lo_hi is None
                   else "lower" if lo_hi[1] < 0 else "higher" if lo_hi[0] > 0 else "not told apart")
        ci = f" [{lo_hi[0]:+.1%}, {lo_hi[1]:+.1%}]" if lo_hi else ""
        body.append([c.name, _fmt(r.ppl, ".3f"), _fmt(r.ppl_delta, "+.1%") + ci, verdict])
    lines = columns(["variant", "token perplexity", f"Δppl vs {name} [95% CI]", "verdict"], body)
    blocks = len(ref.block_nll or [])
    lines += ["", f"CI: paired over {blocks} blocks of the same tokens; lower/higher: the whole interval is on "
              f"that side of {name}'s perplexity"]
    return "\n".join(lines)
