"""The recommendation: which variant to ship for the workload the report ranks for (report/decide.py settles
ties between contenders timed head to head), why each other one was not chosen, and which of the figures it rests
on were noisy."""

from __future__ import annotations

from optkit.report.analysis import Row, budget, engine_label, rows
from optkit.results import Report


def workload_of(report: Report):
    """(the workload the report ranks for, whether it is the default one)."""
    from optkit.recipe import BenchSpec, WorkloadSpec
    from optkit.workload import resolve

    given = report.recipe.get("workload")
    bench = report.recipe.get("bench")
    spec = BenchSpec.model_validate(bench) if bench else None
    return resolve(WorkloadSpec.model_validate(given) if given else None, spec), given is None


def ranked_for(report: Report) -> str:
    """'Ranked for ...': the workload in words, the default saying it is one."""
    from optkit.workload import describe

    w, default = workload_of(report)
    return f"Ranked for {describe(w, default)}."


def recommend(report: Report) -> tuple[str, list[str]]:
    """-> (headline sentence, reasons each other variant was not chosen)."""
    from optkit.report.decide import decide

    rs = rows(report)
    limit = budget(report)
    base = next((r for r in rs if r.name == report.baseline), None)
    if base is None or base.status != "ok":
        return "No recommendation: the baseline did not finish, so nothing can be compared.", []
    if len(rs) == 1:  # optkit eval / bench of one checkpoint: nothing to choose between
        return f"One model measured ({base.name}); add variants to a recipe to compare and get a recommendation.", []
    if base.tps is None:
        return _accuracy_only(rs, base, limit)
    ranked = ranking(rs, base, limit)
    decision = decide(report, ranked, {r.name: r.size_mb for r in rs}, {r.name: r.ppl for r in rs})
    chosen = next(r for r in rs if r.name == decision.chosen)
    rejected = []
    for r in rs:
        if r is chosen or r is base:
            continue
        v = decision.verdicts.get(r.name)
        if r.status != "ok":
            rejected.append(f"{r.name}: {r.status} ({r.error or 'no reason recorded'})")
        elif r.ppl_delta is not None and r.ppl_delta > limit:
            rejected.append(f"{r.name}: perplexity {r.ppl_delta:+.1%}, over the {limit:.0%} budget")
        elif r.speed_caveat:
            kept = f"perplexity {r.ppl_delta:+.1%}, within budget; " if r.ppl_delta is not None else ""
            rejected.append(f"{r.name}: not ranked on speed ({kept}{r.speed_caveat}); judge it by its accuracy "
                            "and time it in the engine it ships to")
        elif r.name in decision.tied:
            rejected.append(f"{r.name}: ties with {chosen.name} on speed and lost the tie break (size, then "
                            "perplexity)")
        elif v is not None and v.outcome == "faster" and ranked[0].name == chosen.name:
            rejected.append(f"{r.name}: slower than {chosen.name} timed head to head ({chosen.name} {v.text()})")
        elif r.speedup is not None:
            rejected.append(f"{r.name}: slower than {chosen.name} ({speed_text(r)} vs "
                            f"{speed_text(chosen) if chosen is not base else '1.00x'} {r.objective})")
    unranked = [r.name for r in rs if r.status == "ok" and r.speed_caveat and r is not base
                and (r.ppl_delta is None or r.ppl_delta <= limit)]
    aside = (f" Within budget but not ranked on speed (measured outside the engine they ship to): "
             f"{', '.join(unranked)}." if unranked else "")
    why = f" {decision.why}." if decision.why else ""
    if chosen is base or (chosen.speedup is not None and chosen.speedup <= 1 and not decision.why):
        return (f"Keep the baseline ({base.name}): no variant was faster while staying within "
                f"{limit:.0%} perplexity.{why}{aside} {ranked_for(report)}", rejected)
    from optkit.workload import PHRASE

    parts = [f"{speed_text(chosen)} {PHRASE[chosen.objective]}"]
    if chosen.size_ratio:
        parts.append(f"{chosen.size_ratio:.1f}x smaller" if chosen.size_ratio >= 1 else
                     f"{1 / chosen.size_ratio:.1f}x larger")
    if chosen.ppl_delta is not None:
        ci = chosen.ppl_delta_ci
        parts.append(f"perplexity {chosen.ppl_delta:+.1%}" + (f" (95% CI {ci[0]:+.1%} to {ci[1]:+.1%})" if ci
                                                              else ""))
    noisy = (f" The speed-up is uncertain ({chosen.speedup_noisy}); rerun on a quiet machine before deciding."
             if chosen.speedup_noisy else "")
    return (f"Ship {chosen.name}: {', '.join(parts)} vs {base.name}.{why}{deploy_text(chosen)}{noisy}{aside} "
            f"{ranked_for(report)}", rejected)


def deploy_text(r: Row) -> str:
    """What to run the chosen variant in, and the file, where it is one."""
    if r.engine is None:
        return ""
    return f" Deploy it in {engine_label(r.engine)}" + (f": {r.file}." if r.file else ".")


def noisy_figures(report: Report) -> list[str]:
    """Why figures the recommendation rests on are uncertain: the chosen variant's speed-up, or, when it keeps
    the baseline, the speed-ups of the variants within budget that it turned down."""
    headline, _ = recommend(report)
    within = [r for r in rows(report) if r.name != report.baseline and r.status == "ok" and r.speedup_noisy
              and (r.ppl_delta is None or r.ppl_delta <= budget(report))]
    if headline.startswith("Ship "):
        within = [r for r in within if headline.startswith(f"Ship {r.name}:")]
    return [f"{r.name}: decode speed-up {speed_text(r)} ({r.speedup_noisy})" for r in within]


def speed_text(r: Row) -> str:
    """A speed-up as people should read it: a plain number only when the timing held up, else the range."""
    if not r.speedup_noisy or r.speedup_range is None:
        return f"{r.speedup:.2f}x"
    lo, hi = r.speedup_range
    return f"uncertain {lo:.2f}x-{hi:.2f}x (noisy)"


def _accuracy_only(rs: list[Row], base: Row, limit: float) -> tuple[str, list[str]]:
    """Without a benchmark, say which variants keep accuracy; speed cannot be judged."""
    within = [r.name for r in rs if r is not base and r.status == "ok" and r.ppl_delta is not None
              and r.ppl_delta <= limit]
    rejected = [f"{r.name}: perplexity {r.ppl_delta:+.1%}, over the {limit:.0%} budget" for r in rs
                if r is not base and r.ppl_delta is not None and r.ppl_delta > limit]
    rejected += [f"{r.name}: {r.status} ({r.error or 'no reason recorded'})" for r in rs if r.status != "ok"]
    keep = ", ".join(within) if within else "none"
    return (f"No speed was measured (bench disabled), so no variant is recommended; within {limit:.0%} "
            f"perplexity of {base.name}: {keep}.", rejected)


def runoff_pairs(report: Report) -> list[tuple[str, str]]:
    """(best, contender) pairs to time head to head: within budget, ranked by speed-up against the baseline."""
    from optkit.report.decide import contenders

    rs = rows(report)
    base = next((r for r in rs if r.name == report.baseline), None)
    if base is None or base.status != "ok" or base.speedup is None:
        return []
    ranked = ranking(rs, base, budget(report))
    return [(ranked[0].name, c.name) for c in contenders(ranked, ranked[0])]


def ranking(rs: list[Row], base: Row, limit: float) -> list[Row]:
    """Rows that compete for the recommendation, fastest first by their speed-up against the baseline: finished,
    timed in the engine they ship to, within the perplexity budget; the baseline among them at 1.0."""
    within = [r for r in rs if r.status == "ok" and r.speedup is not None and not r.speed_caveat and r is not base
              and (r.ppl_delta is None or r.ppl_delta <= limit)]
    return sorted([base, *within], key=lambda r: -(1.0 if r is base else r.speedup))


def choose(report: Report) -> str | None:
    """The variant the recommendation ships (the baseline when it keeps it); None when speed was not measured."""
    from optkit.report.decide import decide

    rs = rows(report)
    base = next((r for r in rs if r.name == report.baseline), None)
    if base is None or base.status != "ok" or base.tps is None:
        return None
    decision = decide(report, ranking(rs, base, budget(report)), {r.name: r.size_mb for r in rs},
                      {r.name: r.ppl for r in rs})
    return decision.chosen if decision else None
