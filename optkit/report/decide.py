"""Decisions that hold under noise (issue 26). Variants whose speed-ups against the baseline overlap the best one's
are contenders; the pipeline times the best against each of them directly (report.duels, optkit/duel.py), and
the recommendation reads those duels: one variant is faster only when the whole 95% interval of the duel's speed-up
lies more than TIE beyond 1; anything else is a tie, broken by size (smaller wins when they differ by more than
SAME_SIZE), then by perplexity, and the headline says so. A variant the duel shows faster takes the place of the best.

Why the whole interval and not its median: the search demo's two deepest mixes differ by about 3% (six duels over
two sets of three runs: +1%, +2%, -2%, +3%, +3%, +9%, each ± 3% to ± 9%). Calling "faster" when the interval merely
excluded 1 and the median passed 3% named a different winner in one run of three; an interval that must clear the
tie band calls all six a tie, and the tie break (size, then perplexity) gives the same answer every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from optkit.results import HeadToHead, Report
from optkit.stats import Stats

TIE = 0.03  # a speed-up whose interval reaches within this of 1 is a tie: no difference worth a decision shown
# sizes this close are the same size and perplexity breaks the tie: a search's mixes differ by 1-3% in size and by
# up to 4 points of perplexity (SmolLM2: 90.0 MB at +4.4% against 91.8 MB at +1.4%), and at 2% the smaller won
SAME_SIZE = 0.10
OVERLAP = 0.10  # a variant within 10% of the best's speed-up is a contender even when their ranges do not overlap
MAX_CONTENDERS = 3  # duels per run: the best against at most this many


def call(low: float, high: float) -> str:
    """A speed-up's 95% interval in words: 'faster' when all of it is more than TIE above 1, 'slower' when all of
    it is more than TIE below 1, else 'tie' (no difference worth a decision shown)."""
    if low > 1 + TIE:
        return "faster"
    if high < 1 / (1 + TIE):
        return "slower"
    return "tie"


def settled(low: float, high: float) -> bool:
    """Whether more rounds could still change call(): not when it is decided, nor when the whole interval lies
    inside the tie band (a tie that more rounds would only confirm)."""
    return call(low, high) != "tie" or (low >= 1 / (1 + TIE) and high <= 1 + TIE)


@dataclass
class Verdict:
    """One duel read from the best's side: its speed-up over the other, the interval, and what that means."""

    other: str
    median: float
    low: float
    high: float
    outcome: str  # "faster" (the best), "slower" (the other is faster), "tie"
    noisy: str | None = None

    def text(self) -> str:
        half = (self.high - self.low) / 2
        return f"{self.median - 1:+.0%} ± {half:.0%}"


@dataclass
class Decision:
    chosen: str
    tied: list[str] = field(default_factory=list)  # tied on speed with the chosen one, and lost the tie break
    why: str = ""  # the tie (or the overturn) in words, for the headline
    verdicts: dict[str, Verdict] = field(default_factory=dict)


def _oriented(duel: HeadToHead, first: str) -> Stats | None:
    """The duel's objective speed-up of `first` over the other, whichever side first was on."""
    st = duel.speedup
    if st is None or duel.a == first:
        return st
    return Stats(median=1 / st.median, p10=1 / st.p90, p90=1 / st.p10, n=st.n, unit="x", noisy=st.noisy,
                 ci_low=1 / st.ci_high if st.ci_high else None, ci_high=1 / st.ci_low if st.ci_low else None,
                 noisy_reason=st.noisy_reason)


def verdict(duels: list[HeadToHead], best: str, other: str) -> Verdict | None:
    """What the duel between best and other says, or None when they were not timed against each other."""
    duel = next((d for d in duels if {d.a, d.b} == {best, other} and d.speedup is not None), None)
    if duel is None:
        return None
    st = _oriented(duel, best)
    low, high = st.ci_low or st.p10, st.ci_high or st.p90
    return Verdict(other, st.median, low, high, call(low, high), st.noisy_reason if st.noisy else None)


def contenders(rs: list, best) -> list:
    """Variants whose speed-up against the baseline could be the best's: ranges overlapping, or within OVERLAP."""
    lo_best = best.speedup_range[0] if best.speedup_range else best.speedup
    out = []
    for r in rs:
        if r is best or r.speedup is None:
            continue
        hi = r.speedup_range[1] if r.speedup_range else r.speedup
        if hi >= lo_best or r.speedup >= best.speedup * (1 - OVERLAP):
            out.append(r)
    return sorted(out, key=lambda r: -r.speedup)[:MAX_CONTENDERS]


def decide(report: Report, ranked: list, sizes: dict, ppls: dict) -> Decision | None:
    """ranked: rows within budget, fastest first by their speed-up against the baseline (the baseline itself
    among them at 1.0 when it is a candidate). None when nothing is ranked."""
    if not ranked:
        return None
    best = ranked[0]
    verdicts = {v.other: v for v in (verdict(report.duels, best.name, r.name) for r in ranked[1:]) if v}
    faster = [v for v in verdicts.values() if v.outcome == "slower"]
    if faster:  # a direct comparison overturns the ranking against the baseline
        win = min(faster, key=lambda v: v.median)
        return Decision(win.other, why=f"{win.other} is faster than {best.name} timed head to head "
                        f"({1 / win.median - 1:+.0%}, interval {1 / win.high - 1:+.0%} to {1 / win.low - 1:+.0%})",
                        verdicts=verdicts)
    tied = [best.name] + [n for n, v in verdicts.items() if v.outcome == "tie"]
    if len(tied) == 1:
        return Decision(best.name, verdicts=verdicts)
    chosen = _break_tie(tied, sizes, ppls)
    others = [n for n in tied if n != chosen]
    return Decision(chosen, others, _tie_text(chosen, others, best.name, verdicts, sizes, ppls), verdicts)


def _break_tie(names: list[str], sizes: dict, ppls: dict) -> str:
    """The smallest file; among sizes within SAME_SIZE of the smallest, the lowest perplexity."""
    known = [n for n in names if sizes.get(n)]
    if not known:
        return min(names, key=lambda n: ppls.get(n) or float("inf"))
    smallest = min(sizes[n] for n in known)
    close = [n for n in known if sizes[n] <= smallest * (1 + SAME_SIZE)]
    return min(close, key=lambda n: (ppls.get(n) or float("inf"), sizes[n]))


def _tie_text(chosen: str, others: list[str], best: str, verdicts: dict, sizes: dict, ppls: dict) -> str:
    """'gguf-q4_1 and gguf-q8_0 tie on speed (gguf-q8_0 +2% ± 5% against gguf-q4_1, timed head to head);
    gguf-q4_1 is 1.5x smaller.' Each duel is quoted from the side of the variant ranked first against the
    baseline, the one every duel was run against."""
    names = [chosen, *others]
    duels = "; ".join(f"{best} {verdicts[n].text()} against {n}" for n in names if n in verdicts)
    # an interval that excludes 1 yet reaches into the band reads like a win: say the rule that makes it a tie
    rule = any(v.low > 1 or v.high < 1 for n, v in verdicts.items() if n in names)
    text = (f"{' and '.join(names)} tie on speed ({duels}, timed head to head"
            + (f"; a tie unless all of the interval is over {TIE:.0%})" if rule else ")"))
    runner = min(others, key=lambda n: sizes.get(n) or float("inf"))
    if sizes.get(chosen) and sizes.get(runner) and sizes[runner] > sizes[chosen] * (1 + SAME_SIZE):
        return text + f"; {chosen} is {size_text(sizes[runner] / sizes[chosen])}"
    if ppls.get(chosen) and ppls.get(runner):
        return text + (f"; within {SAME_SIZE:.0%} of the smallest size, {chosen} has the lower perplexity "
                       f"({ppls[chosen]:.3f} vs {ppls[runner]:.3f})")
    return text


def size_text(ratio: float) -> str:
    """Another file's size over this one's, in words: '1.5x smaller', '4% smaller' (a ratio under 1.1 printed as
    1.0x said nothing), 'the same size', '3% larger'."""
    if ratio >= 1.1:
        return f"{ratio:.1f}x smaller"
    if ratio > 1.005:
        return f"{ratio - 1:.0%} smaller"
    if ratio >= 1 / 1.005:
        return "the same size"
    return f"{1 / ratio:.1f}x larger" if ratio <= 1 / 1.1 else f"{1 / ratio - 1:.0%} larger"
