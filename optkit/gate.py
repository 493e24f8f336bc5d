"""The CI verdict: pure functions from (Report, GateSpec) to a pass/fail per variant."""

from __future__ import annotations

from dataclasses import dataclass, field

from optkit.errors import BadInput
from optkit.recipe import GateSpec
from optkit.report.analysis import rows
from optkit.results import Report


@dataclass
class Verdict:
    variant: str
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.variant}: {'; '.join(self.reasons)}"


def evaluate(report: Report, spec: GateSpec) -> list[Verdict]:
    if spec.max_ppl_increase is None and spec.min_speedup is None:
        raise BadInput("no gate rules; pass --max-ppl-increase and/or --min-speedup, or add gates: to the recipe")
    table = {r.name: r for r in rows(report)}
    names = spec.variants or [n for n in table if n != report.baseline]
    unknown = [n for n in names if n not in table]
    if unknown:
        raise BadInput(f"gate names unknown variants {unknown}; the report has {list(table)}")
    base = table[report.baseline]
    verdicts = []
    for name in names:
        r, reasons, ok = table[name], [], True
        if r.status != "ok" or base.status != "ok":
            who = name if r.status != "ok" else f"baseline {base.name}"
            verdicts.append(Verdict(name, False, [f"{who} did not finish ({r.error or base.error})"]))
            continue
        if spec.max_ppl_increase is not None:
            if r.ppl_delta is None:
                ok, reasons = False, reasons + ["no perplexity to compare with the baseline"]
            else:
                good = r.ppl_delta <= spec.max_ppl_increase
                ok &= good
                reasons.append(f"perplexity {r.ppl_delta:+.2%} ({'<=' if good else '>'} "
                               f"+{spec.max_ppl_increase:.2%} allowed)")
        if spec.min_speedup is not None:
            if r.speedup is None:
                ok, reasons = False, reasons + ["no decode speed to compare with the baseline"]
            else:
                good = r.speedup >= spec.min_speedup
                ok &= good
                reasons.append(f"decode speed-up {r.speedup:.2f}x ({'>=' if good else '<'} "
                               f"{spec.min_speedup:g}x required)" + (" [noisy timing]" if r.noisy else ""))
        verdicts.append(Verdict(name, ok, reasons))
    return verdicts
