"""Decisions that hold under noise: contenders are picked for a head-to-head, a duel inside its interval is a tie
broken by size then perplexity and said so, a duel beyond its interval overturns the ranking against the baseline,
and the headline names the workload it ranked for."""

from optkit.report.recommend import runoff_pairs
from optkit.report.wording import recommend
from optkit.results import HeadToHead
from optkit.stats import Stats
from tests.unit.test_gate import cand, make_report


def duel(a, b, median, low, high):
    return HeadToHead(a=a, b=b, objective="decode", unit="tokens/s",
                      speedup=Stats(median=median, p10=low, p90=high, n=6, ci_low=low, ci_high=high))


def sized(c, mb):
    c.bench.size_mb = mb
    return c


def demo_like():
    """The issue's case: Q4_1 and Q8_0 files within budget at about the same speed against the fp32 baseline."""
    return make_report(sized(cand("q8", 20.1, 121.2), 137.5), sized(cand("q4_1", 20.1, 118.0), 93.8),
                       cand("slowish", 20.1, 60.0), cand("over", 25.0, 200.0))


def test_contenders_are_the_overlapping_ones_within_budget():
    assert runoff_pairs(demo_like()) == [("q8", "q4_1")]  # 'over' is over budget, 'slowish' cannot be the best


def test_no_duel_with_a_variant_in_an_engine_environment_of_its_own():
    """A vLLM variant runs in vLLM's interpreter, where llama.cpp is not installed: a duel against a llama.cpp file
    could not load both sides, so the pair keeps its ranking by separate benchmarks; two llama.cpp files still duel."""
    report = demo_like()
    engines = {"base": "vllm", "q8": "llamacpp", "q4_1": "llamacpp", "slowish": "llamacpp", "over": "llamacpp"}
    for c in report.variants:
        c.engine = engines[c.name]
    assert runoff_pairs(report) == [("q8", "q4_1")]
    report.variants[1].engine = "vllm"
    assert runoff_pairs(report) == []


def test_a_tie_goes_to_the_smaller_file_and_is_said():
    report = demo_like()
    report.duels = [duel("q8", "q4_1", 1.02, 0.97, 1.07)]
    headline, rejected = recommend(report)
    assert headline.startswith("Ship q4_1:"), headline
    assert "q4_1 and q8 tie on speed (q8 +2% ± 5% against q4_1, timed head to head); q4_1 is 1.5x smaller" in headline
    assert any(r.startswith("q8: ties with q4_1 on speed") for r in rejected)
    assert "Ranked for decode tokens/s for prompt/output tokens 128/64, 1 request at a time (the default" in headline


def test_equal_sizes_fall_back_to_perplexity():
    report = make_report(sized(cand("a", 20.4, 50.0), 90.0), sized(cand("b", 20.2, 49.0), 90.5))
    report.duels = [duel("a", "b", 1.01, 0.96, 1.06)]
    headline, _ = recommend(report)
    assert headline.startswith("Ship b:") and "within 10% of the smallest size, b has the lower perplexity" in headline


def test_a_few_percent_of_size_does_not_outweigh_perplexity():
    """A search's tied mixes (issue 26, SmolLM2): 90.0 MB at +4.4% and 92.0 MB at +1.4%; with sizes within 2% the
    same size, the 2% smaller file won on three points of perplexity."""
    report = make_report(sized(cand("small", 20.9, 50.0), 90.0), sized(cand("accurate", 20.3, 49.0), 92.0))
    report.duels = [duel("small", "accurate", 1.02, 0.95, 1.09)]
    headline, rejected = recommend(report)
    assert headline.startswith("Ship accurate:"), headline
    assert "9% smaller" in headline  # than the baseline, make_report's 100 MB file
    assert any(r.startswith("small: ties with accurate on speed") for r in rejected)


def test_a_clear_head_to_head_win_overturns_the_baseline_ranking():
    report = demo_like()
    report.duels = [duel("q8", "q4_1", 0.85, 0.80, 0.90)]  # timed together, q4_1 is faster beyond the noise
    headline, _ = recommend(report)
    assert headline.startswith("Ship q4_1:") and "q4_1 is faster than q8 timed head to head" in headline


def test_a_clear_loss_keeps_the_best_and_says_by_how_much():
    report = demo_like()
    report.duels = [duel("q8", "q4_1", 1.25, 1.20, 1.30)]
    headline, rejected = recommend(report)
    assert headline.startswith("Ship q8:")
    assert any("q4_1: slower than q8 timed head to head (q8 +25% ± 5%)" in r for r in rejected)


def test_a_latency_workload_is_ranked_and_named():
    report = demo_like()
    report.recipe["workload"] = {"requests": [{"prompt": 2000, "output": 100}], "objective": "latency"}
    for c in report.variants:  # a workload benchmark: end-to-end ms (lower is better), q4_1 the fastest here
        from optkit.results import WorkloadFigures

        ms = {"base": 9000.0, "q8": 3000.0, "q4_1": 2000.0, "slowish": 4000.0, "over": 1000.0}[c.name]
        c.bench.workload = WorkloadFigures(objective="latency", unit="ms", value=Stats(median=ms, p10=ms, p90=ms,
                                                                                       n=5))
    headline, _ = recommend(report)
    assert headline.startswith("Ship q4_1: 4.50x faster end to end"), headline
    assert "Ranked for end-to-end latency per request for prompt/output tokens 2000/100" in headline


def test_an_interval_that_reaches_into_the_tie_band_is_a_tie():
    """The search demo's third run (issue 26): mix-q4_0-52 over mix-iq4_nl-48 +8.8% [+0.6%, +17.2%]. The interval
    excludes 1 and the median is past 3%, which the old rule called faster; five other duels of the same pair were
    -2% to +3.4%. Only an interval wholly beyond the 3% band is a decision, so this is the same tie as theirs."""
    report = make_report(sized(cand("q4_0", 20.9, 60.0), 90.0), sized(cand("iq4_nl", 20.3, 58.0), 92.0))
    report.duels = [duel("q4_0", "iq4_nl", 1.088, 1.006, 1.172)]
    headline, rejected = recommend(report)
    assert headline.startswith("Ship iq4_nl:"), headline
    assert "tie on speed (q4_0 +9% ± 8% against iq4_nl, timed head to head; a tie unless all of the interval is " \
           "over 3%)" in headline
    report.duels = [duel("q4_0", "iq4_nl", 1.088, 1.031, 1.172)]  # all of it beyond the band: q4_0 is faster
    assert recommend(report)[0].startswith("Ship q4_0:")
