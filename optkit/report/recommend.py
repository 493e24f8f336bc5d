"""The numbers the recommendation rests on: the workload a report ranks for, the variants that compete (within
budget, fastest first against the baseline), and the pairs the pipeline times head to head.
The sentences are wording.py's; report/decide.py settles ties between contenders timed head to head."""

from __future__ import annotations

from optkit.report.analysis import Row, budget, rows
from optkit.results import Report


def workload_of(report: Report):
    """(the workload the report ranks for, whether it is the default one)."""
    from optkit.recipe import BenchSpec, WorkloadSpec
    from optkit.workload import resolve

    given = report.recipe.get("workload")
    bench = report.recipe.get("bench")
    spec = BenchSpec.model_validate(bench) if bench else None
    return resolve(WorkloadSpec.model_validate(given) if given else None, spec), given is None


def runoff_pairs(report: Report) -> list[tuple[str, str]]:
    """(best, contender) pairs to time head to head: within budget, ranked by speed-up against the baseline."""
    from optkit.report.decide import contenders

    rs = rows(report)
    base = next((r for r in rs if r.name == report.baseline), None)
    if base is None or base.status != "ok" or base.speedup is None:
        return []
    ranked = ranking(rs, base, budget(report))
    return [(ranked[0].name, c.name) for c in contenders(ranked, ranked[0]) if _one_process(ranked[0], c)]


def _one_process(a: Row, b: Row) -> bool:
    """Whether a duel can hold both in one worker: neither runs in an engine environment of its own (vLLM, OpenVINO:
    that worker's interpreter lacks the other engine's library, and the duel would fail after a minutes-long start).
    Such pairs keep the ranking by their own benchmarks."""
    from optkit import envs

    return not any(r.engine and envs.spec_of(r.engine) for r in (a, b))


def ranking(rs: list[Row], base: Row, limit: float) -> list[Row]:
    """Rows that compete for the recommendation, fastest first by their speed-up against the baseline: finished,
    timed in the engine they ship to, within the perplexity budget; the baseline among them at 1.0."""
    within = [r for r in rs if r.status == "ok" and r.speedup is not None and not r.speed_caveat and r is not base
              and r.finite and (r.ppl_delta is None or r.ppl_delta <= limit)]
    return sorted([base, *within], key=lambda r: -(1.0 if r is base else r.speedup))

