"""The CI verdict: pure functions from (Report, GateSpec) to a pass/fail per variant."""

from __future__ import annotations

from dataclasses import dataclass, field

from optkit.errors import BadInput
from optkit.finite import nonfinite
from optkit.recipe import GateSpec
from optkit.report.analysis import Row, compare, row, rows, task_delta
from optkit.results import Report, VariantResult
from optkit.stats import t95


@dataclass
class Verdict:
    variant: str
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.variant}: {'; '.join(self.reasons)}"


def _judge(text: str, value: float, interval: tuple[float, float] | None, limit: float, at_most: bool,
           strict: bool, limit_text: str, missing: str, fails: str, noise: str) -> tuple[bool, str]:
    """One noise-aware rule: with an interval, fail only when even its favourable end misses the limit, and say
    so when the point estimate misses it inside the noise; strict (or no interval) judges the point estimate."""
    holds = (lambda v: v <= limit) if at_most else (lambda v: v >= limit)
    yes, no = ("<=", ">") if at_most else (">=", "<")
    if strict or interval is None:
        good = holds(value)
        return good, f"{text} {yes if good else no} {limit_text}{'' if strict else missing}"
    if not holds(interval[0] if at_most else interval[1]):
        return False, f"{text}: {fails} {limit_text}"
    if not holds(value):
        return True, f"{text}: {noise} {limit_text} but within {'noise' if at_most else 'timing spread'} " \
                     "(--strict would fail it)"
    return True, f"{text} {yes} {limit_text}"


def _accuracy(r: Row, allowed: float, strict: bool) -> tuple[bool, str]:
    if r.ppl_delta is None:
        return False, "no perplexity to compare"
    ci = r.ppl_delta_ci
    text = f"perplexity {r.ppl_delta:+.2%}" + (f" (95% CI {ci[0]:+.2%} to {ci[1]:+.2%})" if ci else "")
    return _judge(text, r.ppl_delta, ci, allowed, True, strict, f"+{allowed:.2%} allowed",
                  ", point estimate: no paired samples", "the whole interval is above", "above")


def _speed(r: Row, required: float, strict: bool) -> tuple[bool, str]:
    if r.speedup is None:
        return False, "no decode speed to compare"
    rng = r.speedup_range
    text = f"decode speed-up {r.speedup:.2f}x" + (f" (p10/p90 range {rng[0]:.2f}x-{rng[1]:.2f}x" if rng else " (") \
        + f"{', ' if rng else ''}{r.speedup_how})" + (f" [uncertain: {r.speedup_noisy}]" if r.speedup_noisy else "")
    return _judge(text, r.speedup, rng, required, False, strict, f"{required:g}x required", "",
                  "even the optimistic end is below", "median below")


def _tasks(new: VariantResult, ref: VariantResult, spec: GateSpec, strict: bool) -> list[tuple[bool, str]]:
    """Task accuracy rules, paired by document id over per-sample results (the report's task_delta): a drop
    fails only when the CI says it is real."""
    checks = []
    for res in (a for a in new.accuracy if a.higher_is_better and isinstance(a.details.get("samples"), list)):
        base = ref.metric(res.task, res.metric)
        label = f"{res.task} {res.metric}"
        d = task_delta(new.name, res, base) if base is not None else None
        if d is None:
            checks.append((False, f"{label}: no matching per-sample results in the reference"))
            continue
        diff, (lo, hi) = d.delta, d.ci
        text = f"{label} {res.value:.3f} vs {base.value:.3f} ({diff:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f})"
        best = diff if strict else hi  # noise-aware: judge the most favourable end of the interval
        if spec.max_acc_drop is not None:
            good = best >= -spec.max_acc_drop
            checks.append((good, f"{text} {'within' if good else 'beyond'} the {spec.max_acc_drop:.3f} drop allowed"))
        if spec.min_recovery is not None and base.value > 0:
            recovery = (base.value + best) / base.value
            good = recovery >= spec.min_recovery
            checks.append((good, f"{label} recovery {res.value / base.value:.3f} "
                                 f"({'>=' if good else '<'} {spec.min_recovery:g} required)"))
    if not checks:
        checks.append((False, "no task accuracy with per-sample results to gate (add eval.tasks)"))
    return checks


def _fidelity(cand: VariantResult, spec: GateSpec, strict: bool) -> list[tuple[bool, str]]:
    """KL and top-1 agreement against the run's baseline; noise-aware unless strict: the rule fails only when
    the 95% interval (from the spread over prompts) lies wholly on the wrong side of the limit."""
    out = []
    for limit, metric, worse in ((spec.max_kl, "kl_mean", 1), (spec.min_top1_agreement, "top1_agreement", -1)):
        if limit is None:
            continue
        res = cand.metric("fidelity", metric)
        if res is None:
            out.append((False, f"no fidelity {metric} measured (eval.fidelity runs when a baseline is compared)"))
            continue
        df = (res.details.get("prompts") or res.n) - 1  # the stderr is over prompts: t with prompts - 1 df
        half = 0.0 if strict or res.stderr is None else t95(df) * res.stderr
        best = res.value - worse * half  # the most favourable end of the interval
        good = best <= limit if worse > 0 else best >= limit
        ci = f" (95% CI {res.value - half:.4g} to {res.value + half:.4g})" if half else ""
        sign = ("<=" if good else ">") if worse > 0 else (">=" if good else "<")
        out.append((good, f"fidelity {metric} {res.value:.4g}{ci} {sign} {limit:g}"))
    return out


def _limits(r: Row, spec: GateSpec) -> list[tuple[bool, str]]:
    """Absolute budgets: size on disk, peak memory, time to first token."""
    out = []
    for limit, value, what, unit in ((spec.max_size_mb, r.size_mb, "size", "MB"),
                                     (spec.max_memory_mb, r.peak_mb, "peak memory", "MB"),
                                     (spec.max_prefill_ms, r.prefill_ms, "prefill", "ms")):
        if limit is None:
            continue
        if value is None:
            out.append((False, f"no {what} measured"))
        else:
            out.append((value <= limit, f"{what} {value:.1f} {unit} ({'<=' if value <= limit else '>'} {limit:g})"))
    return out


def hardware(report: Report) -> str:
    """What speed depends on besides the model: the device, its model name and the threads used."""
    env = report.environment
    threads = {c.bench.threads for c in report.variants if c.bench and c.bench.threads} or {env.threads}
    return f"{env.device} {env.device_name or '?'}, {'/'.join(str(t) for t in sorted(threads, key=str))} threads"


def regression_spec(new: Report, old: Report) -> GateSpec:
    """`--against` without rule options: no regression beyond noise, per namesake variant, on what both reports
    measured: perplexity, task accuracy (paired CIs) and decode speed (timing spread)."""
    def has(rep: Report, what) -> bool:
        return any(c.status == "ok" and what(c) for c in rep.variants)

    tasks = lambda c: any(isinstance(a.details.get("samples"), list) for a in c.accuracy)  # noqa: E731
    ppl = lambda c: c.metric("wikitext-2", "token_perplexity") or c.metric("text-file", "token_perplexity")  # noqa
    bench = lambda c: c.bench is not None  # noqa: E731
    return GateSpec(max_ppl_increase=0.0 if has(new, ppl) and has(old, ppl) else None,
                    max_acc_drop=0.0 if has(new, tasks) and has(old, tasks) else None,
                    min_speedup=1.0 if has(new, bench) and has(old, bench) else None)


def describe(spec: GateSpec, strict: bool) -> str:
    """The rules in words, for the line the gate prints before its verdicts."""
    parts = [f"{k} {v}" for k, v in spec.model_dump().items() if v is not None and k != "variants"]
    return ", ".join(parts) + (" (strict: point estimates)" if strict else " (noise-aware: 95% CIs and timing "
                                                                           "spread)")


def evaluate(report: Report, spec: GateSpec, strict: bool = False, against: Report | None = None) -> list[Verdict]:
    """Gate each variant against the baseline, or with `against` against the same-named variant of an older
    report (a regression gate across commits). Noise-aware unless strict: an accuracy rule fails only when the
    paired 95% CI lies beyond the allowed drop; a speed rule only when the p10/p90 spread cannot reach it."""
    if not spec.rules():
        raise BadInput("no gate rules; pass e.g. --max-ppl-increase 5% or --min-speedup 1.2, or add gates: to the "
                       "recipe" + (" (the two reports measured nothing in common to compare)" if against else ""))
    other_hardware = against is not None and hardware(report) != hardware(against)
    table = {r.name: r for r in rows(report)}
    default = [n for n in table if n != report.baseline] if against is None else list(table)
    names = spec.variants or default
    unknown = [n for n in names if n not in table]
    if unknown:
        raise BadInput(f"gate names unknown variants {unknown}; the report has {list(table)}")
    old = {c.name: row(c) for c in against.variants} if against is not None else {}
    cands = {c.name: c for c in report.variants}
    ref_cands = {c.name: c for c in (against or report).variants}
    verdicts = []
    for name in names:
        r = table[name]
        ref = old.get(name) if against is not None else table[report.baseline]
        if ref is None:
            verdicts.append(Verdict(name, False, ["not in the older report, so nothing to compare with"]))
            continue
        if r.status != "ok" or ref.status != "ok":
            who = name if r.status != "ok" else f"reference {ref.name}"
            verdicts.append(Verdict(name, False, [f"{who} did not finish ({r.error or ref.error})"]))
            continue
        if against is not None:  # against the baseline, rows() already compared (speed within hardware class)
            compare(ref, r)
        checks = []
        if spec.max_ppl_increase is not None:
            checks.append(_accuracy(r, spec.max_ppl_increase, strict))
        if spec.min_speedup is not None and other_hardware:
            checks.append((True, f"speed not compared: this report ran on {hardware(report)}, the older one on "
                                 f"{hardware(against)}; speed is gated only between reports from the same hardware"))
        elif spec.min_speedup is not None:
            checks.append(_speed(r, spec.min_speedup, strict))
        if spec.max_acc_drop is not None or spec.min_recovery is not None:
            ref_name = name if against is not None else report.baseline
            checks += _tasks(cands[name], ref_cands[ref_name], spec, strict)
        checks += _limits(r, spec) + _fidelity(cands[name], spec, strict)
        bad = nonfinite(cands[name])
        if bad:  # NaN compares false both ways: without this a NaN could slip through a rule
            checks.append((False, f"non-finite result ({'; '.join(bad[:3])}): not a measurement"))
        verdicts.append(Verdict(name, all(ok for ok, _ in checks), [text for _, text in checks]))
    return verdicts
