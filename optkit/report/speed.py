"""Speed views of a report: the `optkit bench` table (one row per batch size), compact text lines for the
prompt-length curve and end-to-end latency (report.html shows them through its template). Noisy timings say
so, with the reason."""

from __future__ import annotations

from optkit.results import BenchResult, Report, ServingRun
from optkit.stats import Stats


def fmt_stats(st: Stats | None, spec: str = ".1f") -> str:
    """median [p10-p90], then (noisy) where the measurement did not hold up."""
    if st is None:
        return "-"
    return f"{st.median:{spec}} [{st.p10:{spec}}-{st.p90:{spec}}]" + (" (noisy)" if st.noisy else "")


def _ci(st: Stats) -> str:
    return "-" if st.ci_low is None else f"{st.ci_low:.1f}-{st.ci_high:.1f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def noisy_reasons(b: BenchResult) -> list[str]:
    named = [(f"decode batch {p.batch_size}", p.decode_tokens_per_s) for p in b.throughput]
    named += [(f"prefill batch {p.batch_size}", p.prefill_ms) for p in b.throughput]
    named += [(f"prefill {p.prompt_len} tokens", p.prefill_ms) for p in b.prefill_by_prompt_len]
    named += [("end-to-end", b.e2e_ms)] if b.e2e_ms else []
    seen, out = set(), []
    for label, st in named:
        if st.noisy and id(st) not in seen:
            seen.add(id(st))
            out.append(f"{label}: {st.noisy_reason or 'noisy'}")
    return out


SERVING_HEADERS = ["concurrency", "done", "req/s", "out tok/s", "TTFT ms p50/p90/p99", "TPOT ms p50/p90/p99"]


def _pcts(d: dict[str, float], spec: str) -> str:
    return "/".join(f"{d[k]:{spec}}" if k in d else "-" for k in ("p50", "p90", "p99"))


def serving_shape(run: ServingRun) -> str:
    """The requests of a sweep that ran ("128-token prompts, 32 new tokens each"), "" for one that did not."""
    return f"{run.prompt_len}-token prompts, {run.gen_len} new tokens each" if run.prompt_len else ""


def serving_rows(run: ServingRun) -> list[list[str]]:
    """One row per concurrency of an online serving sweep (SERVING_HEADERS)."""
    return [[str(p.concurrency), f"{p.completed}/{p.requests}", f"{p.request_throughput:.2f}",
             f"{p.output_throughput:.1f}", _pcts(p.ttft_ms, ".0f"), _pcts(p.tpot_ms, ".1f")] for p in run.points]


def serving_notes(run: ServingRun) -> list[str]:
    """The sweep's start-up (apart from its points) and why it did not run or stopped short."""
    out = [] if run.startup_seconds is None else [f"server start-up {run.startup_seconds:.0f} s, apart from the "
                                                  f"points ({run.server})"]
    return out + ([run.note] if run.note else [])


def serving_text(run: ServingRun) -> list[str]:
    """An online serving sweep as text: its request shape, a row per concurrency, its notes."""
    out = [f"online serving{f' ({shape})' if (shape := serving_shape(run)) else ''}:"]
    return out + (_table(SERVING_HEADERS, serving_rows(run)) if run.points else []) + serving_notes(run)


def bench_table(report: Report) -> str:
    """What `optkit bench` prints: per variant, decode tokens/s and prefill ms per batch size, then the
    prompt-length curve, end-to-end latency, memory, size and energy."""
    out = []
    for c in report.variants:
        b = c.bench
        if b is None:
            out.append(f"{c.name}: {c.status}" + (f" ({c.error})" if c.error else ""))
            continue
        out.append(f"{c.name}: prompt {b.prompt_len} tokens, {b.gen_len} new tokens, {b.threads} threads")
        rows = [[str(p.batch_size), fmt_stats(p.decode_tokens_per_s), _ci(p.decode_tokens_per_s),
                 fmt_stats(p.prefill_ms), str(p.decode_tokens_per_s.n)] for p in b.throughput]
        out += _table(["batch", "decode tok/s median [p10-p90]", "95% CI", "prefill ms median [p10-p90]", "n"],
                      rows)
        out += b.batch_notes
        if len(b.prefill_by_prompt_len) > 1:
            out.append("time to first token (batch 1): " + ", ".join(
                f"{p.prompt_len} tokens {fmt_stats(p.prefill_ms)} ms" for p in b.prefill_by_prompt_len))
        if b.e2e_ms:
            out.append(f"end-to-end (prefill + {b.gen_len} tokens, batch 1): {fmt_stats(b.e2e_ms, '.0f')} ms")
        memory = "-" if b.peak_memory_mb is None else f"{b.peak_memory_mb:.0f} MB ({b.peak_memory_source})"
        out.append(f"peak memory: {memory}; size: {b.size_mb:.1f} MB")
        out.append(f"energy: {energy_text(b.energy)}")
        out += [f"noisy: {r}" for r in noisy_reasons(b)]
        out += serving_text(b.serving) if b.serving else []
        out.append("")
    return "\n".join(out).rstrip()


def speed_lines(report: Report) -> list[str]:
    """Compact lines under the main text table: TTFT by prompt length (when several) and end-to-end latency."""
    out = []
    for c in report.variants:
        b = c.bench
        if b is None:
            continue
        parts = []
        if len(b.prefill_by_prompt_len) > 1:
            parts.append("TTFT ms " + " ".join(f"{p.prompt_len}:{p.prefill_ms.median:.1f}"
                                               for p in b.prefill_by_prompt_len))
        if b.e2e_ms:
            parts.append(f"end-to-end {b.e2e_ms.median:.0f} ms" + (" (noisy)" if b.e2e_ms.noisy else ""))
        if parts:
            out.append(f"  {c.name}: " + " · ".join(parts))
    if out:
        gen = next(c.bench.gen_len for c in report.variants if c.bench)
        out.insert(0, f"batch 1: time to first token by prompt length; end-to-end = prefill + {gen} new tokens")
    return out


def energy_text(e) -> str:
    """One line: decode J/token, above idle, prefill J/token, the sampling cross-check; or why there is none."""
    if e.status != "ok":
        return f"unavailable ({e.reason})"
    parts = [f"{e.joules_per_token:.4f} J per decoded token"]
    if e.joules_per_token_above_idle is not None:
        parts.append(f"{e.joules_per_token_above_idle:.4f} above idle ({e.idle_watts:.0f} W)")
    if e.prefill_joules_per_token is not None:
        parts.append(f"prefill {e.prefill_joules_per_token:.4f} J per prompt token")
    if e.sampled_vs_counter is not None:
        parts.append(f"power sampling / counter {e.sampled_vs_counter:.2f}")
    return "; ".join(parts) + f" ({e.source})"
