"""The CI verdict: pure functions from (Report, GateSpec) to a pass/fail per variant."""

from __future__ import annotations

from dataclasses import dataclass, field

from optkit.errors import BadInput
from optkit.recipe import GateSpec
from optkit.report.analysis import Row, compare, row, rows
from optkit.results import Report


@dataclass
class Verdict:
    variant: str
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.variant}: {'; '.join(self.reasons)}"


def _accuracy(r: Row, allowed: float, strict: bool) -> tuple[bool, str]:
    if r.ppl_delta is None:
        return False, "no perplexity to compare"
    ci = r.ppl_delta_ci
    text = f"perplexity {r.ppl_delta:+.2%}" + (f" (95% CI {ci[0]:+.2%} to {ci[1]:+.2%})" if ci else "")
    if strict or ci is None:
        good = r.ppl_delta <= allowed
        how = "" if strict else ", point estimate: no paired samples"
        return good, f"{text} {'<=' if good else '>'} +{allowed:.2%} allowed{how}"
    if ci[0] > allowed:
        return False, f"{text}: the whole interval is above +{allowed:.2%} allowed"
    if r.ppl_delta > allowed:
        return True, f"{text}: above +{allowed:.2%} allowed but within noise (--strict would fail it)"
    return True, f"{text} <= +{allowed:.2%} allowed"


def _speed(r: Row, required: float, strict: bool) -> tuple[bool, str]:
    if r.speedup is None:
        return False, "no decode speed to compare"
    rng = r.speedup_range
    text = f"decode speed-up {r.speedup:.2f}x" + (f" (p10/p90 range {rng[0]:.2f}x-{rng[1]:.2f}x)" if rng else "")
    if strict or rng is None:
        good = r.speedup >= required
        return good, f"{text} {'>=' if good else '<'} {required:g}x required"
    if rng[1] < required:
        return False, f"{text}: even the optimistic end is below {required:g}x required"
    if r.speedup < required:
        return True, f"{text}: median below {required:g}x but within timing spread (--strict would fail it)"
    return True, f"{text} >= {required:g}x required"


def evaluate(report: Report, spec: GateSpec, strict: bool = False, against: Report | None = None) -> list[Verdict]:
    """Gate each variant against the baseline, or with `against` against the same-named variant of an older
    report (a regression gate across commits). Noise-aware unless strict: an accuracy rule fails only when the
    paired 95% CI lies beyond the allowed drop; a speed rule only when the p10/p90 spread cannot reach it."""
    if spec.max_ppl_increase is None and spec.min_speedup is None:
        raise BadInput("no gate rules; pass --max-ppl-increase and/or --min-speedup, or add gates: to the recipe")
    table = {r.name: r for r in rows(report)}
    default = [n for n in table if n != report.baseline] if against is None else list(table)
    names = spec.variants or default
    unknown = [n for n in names if n not in table]
    if unknown:
        raise BadInput(f"gate names unknown variants {unknown}; the report has {list(table)}")
    old = {c.name: row(c) for c in against.variants} if against is not None else {}
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
        compare(ref, r)
        checks = []
        if spec.max_ppl_increase is not None:
            checks.append(_accuracy(r, spec.max_ppl_increase, strict))
        if spec.min_speedup is not None:
            checks.append(_speed(r, spec.min_speedup, strict))
        verdicts.append(Verdict(name, all(ok for ok, _ in checks), [text for _, text in checks]))
    return verdicts
