"""The sentences and labels people read about a report: the recommendation (which variant to ship and why the
others were not chosen), metric labels, engine names, and the legends under the tables. The numbers behind them
are analysis.py's."""

from __future__ import annotations

from dataclasses import dataclass, field

from optkit.report.analysis import Row, budget, rows
from optkit.results import Report


@dataclass
class Recommendation:
    """What the report recommends: `variant` to ship (the baseline's name when it is kept; None when nothing could be
    compared, or without a benchmark), the headline sentence, and why each other variant was not chosen."""

    variant: str | None
    text: str
    not_chosen: list[str] = field(default_factory=list)
    tied: list[str] = field(default_factory=list)  # tied on speed with `variant` and lost the tie break

    def __str__(self) -> str:
        return self.text


def recommendation(report: Report) -> Recommendation:
    """Which variant to ship for the workload the report ranks for: the fastest within budget against the baseline,
    unless the contenders timed head to head against it say otherwise (report/decide.py: a tie goes to the smaller
    file, then the lower perplexity, and the headline says so)."""
    from optkit.report.decide import decide, size_text
    from optkit.report.recommend import ranking
    from optkit.workload import PHRASE

    rs = rows(report)
    limit = budget(report)
    base = next((r for r in rs if r.name == report.baseline), None)
    if base is None or base.status != "ok":
        return Recommendation(None, "No recommendation: the baseline did not finish, so nothing can be compared.")
    if len(rs) == 1:  # optkit eval / bench of one checkpoint: nothing to choose between
        return Recommendation(None, f"One model measured ({base.name}); add variants to a recipe to compare and get "
                              "a recommendation.")
    if base.tps is None:
        return Recommendation(None, *_accuracy_only(rs, base, limit))
    ranked = ranking(rs, base, limit)
    decision = decide(report, ranked, {r.name: r.size_mb for r in rs}, {r.name: r.ppl for r in rs})
    chosen = next(r for r in rs if r.name == decision.chosen)
    rejected = [why for r in rs if r is not chosen and r is not base
                and (why := _not_chosen(r, chosen, base, ranked, decision, limit))]
    unranked = [r.name for r in rs if r.status == "ok" and r.speed_caveat and r is not base
                and (r.ppl_delta is None or r.ppl_delta <= limit)]
    aside = (f" Within budget but not ranked on speed (measured outside the engine they ship to): "
             f"{', '.join(unranked)}." if unranked else "")
    why = f" {decision.why}." if decision.why else ""
    if chosen is base or (chosen.speedup is not None and chosen.speedup <= 1 and not decision.why):
        return Recommendation(base.name, f"Keep the baseline ({base.name}): no variant was faster while staying "
                              f"within {limit:.0%} perplexity.{why}{aside} {ranked_for(report)}", rejected,
                              decision.tied)
    parts = [f"{speed_text(chosen)} {PHRASE[chosen.objective]}"]
    if chosen.size_ratio:
        parts.append(size_text(chosen.size_ratio))
    if chosen.ppl_delta is not None:
        ci = chosen.ppl_delta_ci
        parts.append(f"perplexity {chosen.ppl_delta:+.1%}" + (f" (95% CI {ci[0]:+.1%} to {ci[1]:+.1%})" if ci
                                                              else ""))
    noisy = (f" The speed-up is uncertain ({chosen.speedup_noisy}); rerun on a quiet machine before deciding."
             if chosen.speedup_noisy else "")
    return Recommendation(chosen.name, f"Ship {chosen.name}: {', '.join(parts)} vs {base.name}.{why}"
                          f"{deploy_text(chosen)}{noisy}{aside} {ranked_for(report)}", rejected, decision.tied)


def _not_chosen(r: Row, chosen: Row, base: Row, ranked: list[Row], decision, limit: float) -> str | None:
    """Why r was not chosen, in one line."""
    v = decision.verdicts.get(r.name)
    if r.status != "ok":
        return f"{r.name}: {r.status} ({r.error or 'no reason recorded'})"
    if not r.finite:
        return f"{r.name}: a non-finite result (NaN or infinite), not a measurement"
    if r.ppl_delta is not None and r.ppl_delta > limit:
        return f"{r.name}: perplexity {r.ppl_delta:+.1%}, over the {limit:.0%} budget"
    if r.speed_caveat:
        kept = f"perplexity {r.ppl_delta:+.1%}, within budget; " if r.ppl_delta is not None else ""
        return (f"{r.name}: not ranked on speed ({kept}{r.speed_caveat}); judge it by its accuracy and time it in "
                "the engine it ships to")
    if r.name in decision.tied:
        return f"{r.name}: ties with {chosen.name} on speed and lost the tie break (size, then perplexity)"
    if v is not None and v.outcome == "faster" and ranked[0].name == chosen.name:
        return f"{r.name}: slower than {chosen.name} timed head to head ({chosen.name} {v.text()})"
    if r.speedup is not None:
        return (f"{r.name}: slower than {chosen.name} ({speed_text(r)} vs "
                f"{speed_text(chosen) if chosen is not base else '1.00x'} {r.objective})")
    return None


def ranked_for(report: Report) -> str:
    """'Ranked for ...': the workload in words, the default saying it is one."""
    from optkit.report.recommend import workload_of
    from optkit.workload import describe

    w, default = workload_of(report)
    return f"Ranked for {describe(w, default)}."


def recommend(report: Report) -> tuple[str, list[str]]:
    """-> (headline sentence, reasons each other variant was not chosen)."""
    rec = recommendation(report)
    return rec.text, rec.not_chosen


def speedup_legend(report: Report) -> str | None:
    """How the speed-up column was timed, where any speed-up is paired: a paired one can disagree with the ratio of
    two decode tok/s figures, which come from benchmarks run minutes apart (the demo once showed a variant at 78.2
    tokens/s and 3.48x beside one at 75.8 and 4.40x; timed together, the first is ~11% slower). None otherwise."""
    speeds = [r for r in rows(report) if r.name != report.baseline and r.speedup is not None]
    paired = [r for r in speeds if r.speedup_how.startswith("paired")]
    if not paired:
        return None
    apart = [r.name for r in speeds if r not in paired]
    return ("speed-up: each variant timed against the baseline in alternating rounds in one process"
            + (f" (from separate benchmarks: {', '.join(apart)})" if apart else "")
            + "; decode tok/s: each variant's own benchmark, run at another moment, so on a busy machine their ratio "
            "can differ from the speed-up: compare variants by speed-up")


def engine_label(engine: str | None) -> str | None:
    """"llama.cpp", "PyTorch": the engine's own label, its registry name where it is not installed."""
    if engine is None:
        return None
    from optkit import registry

    try:
        return registry.engines.cls(engine).label
    except Exception:
        return engine


def deploy_text(r: Row) -> str:
    """What to run the chosen variant in, and the file, where it is one."""
    if r.engine is None:
        return ""
    return (f" Deploy it in {engine_label(r.engine)}" + (f": {r.file}" if r.file else "")
            + (f"; {r.tokenizer_caveat}" if r.tokenizer_caveat else "") + ".")


def noisy_figures(report: Report) -> list[str]:
    """Why figures the recommendation rests on are uncertain: the chosen variant's speed-up, or, when it keeps
    the baseline, the speed-ups of the variants within budget that it turned down."""
    chosen = recommendation(report).variant
    within = [r for r in rows(report) if r.name != report.baseline and r.status == "ok" and r.speedup_noisy
              and (r.ppl_delta is None or r.ppl_delta <= budget(report))]
    if chosen is not None and chosen != report.baseline:
        within = [r for r in within if r.name == chosen]
    return [f"{r.name}: {r.objective} speed-up {speed_text(r)} ({r.speedup_noisy})" for r in within]


def speed_text(r: Row) -> str:
    """A speed-up as people should read it: a plain number only when the timing held up, else the range."""
    if not r.speedup_noisy or r.speedup_range is None:
        return f"{r.speedup:.2f}x"
    lo, hi = r.speedup_range
    return f"uncertain {lo:.2f}x-{hi:.2f}x (noisy)"


def _accuracy_only(rs: list[Row], base: Row, limit: float) -> tuple[str, list[str]]:
    """Without a benchmark, say which variants keep accuracy; speed cannot be judged."""
    within = [r.name for r in rs if r is not base and r.status == "ok" and r.ppl_delta is not None
              and r.ppl_delta <= limit and r.finite]
    rejected = [f"{r.name}: perplexity {r.ppl_delta:+.1%}, over the {limit:.0%} budget" for r in rs
                if r is not base and r.ppl_delta is not None and r.ppl_delta > limit]
    rejected += [f"{r.name}: {r.status} ({r.error or 'no reason recorded'})" for r in rs if r.status != "ok"]
    keep = ", ".join(within) if within else "none"
    return (f"No speed was measured (bench disabled), so no variant is recommended; within {limit:.0%} "
            f"perplexity of {base.name}: {keep}.", rejected)


# Display names: optkit's token perplexity and lm-eval's word perplexity / bits per byte are different
# numbers on different units and must never sit under the same label.
LABELS = {"token_perplexity": "token perplexity (optkit)", "word_perplexity": "word perplexity (lm-eval)",
          "byte_perplexity": "byte perplexity (lm-eval)", "bits_per_byte": "bits per byte (lm-eval)",
          "kl_mean": "KL mean (nats)", "kl_p95": "KL p95 (nats)", "top1_agreement": "top-1 agreement"}


def label(metric: str) -> str:
    return LABELS.get(metric, metric)
