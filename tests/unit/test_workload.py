"""Workloads: the recipe section, the command-line form, the objective arithmetic against a hand computation, the
benchmark measuring a workload's points on a tiny model, and the collapse rule."""

import pytest

from optkit.errors import BadInput
from optkit.meters.latency import collapsed, stats
from optkit.recipe import BenchSpec, WorkloadPoint, WorkloadSpec, parse_text
from optkit.workload import Totals, describe, parse_points, resolve, speedup

RECIPE = """\
name: w
model: {checkpoint: x}
variants: [{name: a}]
workload:
  requests:
    - {prompt: 2000, output: 100, weight: 3}
    - {prompt: 200, output: 200}
  objective: latency
"""


def test_recipe_workload_section_and_its_errors():
    w = parse_text(RECIPE).workload
    assert w.objective == "latency" and w.concurrency == 1 and [p.prompt for p in w.requests] == [2000, 200]
    with pytest.raises(BadInput, match=r"<recipe>:8: workload.objective"):
        parse_text(RECIPE.replace("objective: latency", "objective: fastest"))
    with pytest.raises(BadInput, match="did you mean 'output'"):
        parse_text(RECIPE.replace("output: 200", "outptu: 200"))


def test_default_workload_is_the_bench_shape_and_says_so():
    w = resolve(None, BenchSpec(prompt_len=128, gen_len=64))
    assert (w.requests[0].prompt, w.requests[0].output, w.concurrency, w.objective) == (128, 64, 1, "decode")
    assert "default workload" in describe(w, default=True) and "128/64" in describe(w)


def test_command_line_points():
    pts = parse_points("2000/100:3, 200/200")
    assert [(p.prompt, p.output, p.weight) for p in pts] == [(2000, 100, 3.0), (200, 200, 1.0)]
    for bad in ("2000", "a/b", ""):
        with pytest.raises(ValueError, match="PROMPT/OUTPUT"):
            parse_points(bad)


def test_objectives_against_a_hand_computation():
    long, chat = WorkloadPoint(prompt=2000, output=100, weight=3), WorkloadPoint(prompt=200, output=200, weight=1)
    t = Totals()
    t.add(long, 1, decode_s=2.0, prefill_ms=900.0, e2e_ms=2900.0)
    t.add(chat, 1, decode_s=4.0, prefill_ms=100.0, e2e_ms=4100.0)
    assert t.value("decode") == pytest.approx((3 * 100 + 200) / (3 * 2.0 + 4.0))
    assert t.value("throughput") == pytest.approx((3 * 100 + 200) / ((3 * 2900 + 4100) / 1000))
    assert t.value("latency") == pytest.approx((3 * 2900 + 4100) / 4)
    assert t.value("ttft") == pytest.approx((3 * 900 + 100) / 4)
    assert speedup(50.0, 100.0, "latency") == 2.0 and speedup(50.0, 100.0, "decode") == 0.5


def test_bench_measures_each_workload_point(tiny_lm):
    from optkit.bench import run_bench

    w = WorkloadSpec(requests=[WorkloadPoint(prompt=40, output=4, weight=2), WorkloadPoint(prompt=8, output=12)],
                     objective="latency")
    res = run_bench(tiny_lm, BenchSpec(prompt_len=16, gen_len=4, repeats=3, max_repeats=4, min_seconds=0, threads=1), w)
    fig = res.workload
    assert fig.objective == "latency" and fig.unit == "ms" and fig.value.n >= 3
    assert [(p.prompt, p.output) for p in fig.points] == [(40, 4), (8, 12)]
    long, short = fig.points
    # the mean end-to-end of the mix lies between its points' medians, weighted 2:1 towards the first
    lo, hi = sorted([long.e2e_ms.median, short.e2e_ms.median])
    assert lo * 0.5 <= fig.value.median <= hi * 2
    assert all(p.ttft_ms.median > 0 and p.decode_tokens_per_s.median > 0 for p in fig.points)


def test_default_workload_reuses_the_batch1_benchmark(tiny_lm):
    from optkit.bench import run_bench

    res = run_bench(tiny_lm, BenchSpec(prompt_len=16, gen_len=4, repeats=3, max_repeats=4, min_seconds=0, threads=1))
    assert res.workload.objective == "decode" and res.workload.value == res.decode_tokens_per_s


def test_a_collapse_is_set_aside_not_ranked():
    # llama.cpp on a busy 2-core machine: 50 tokens/s, then 5 (threads spinning against a neighbour)
    tps = [50.0, 51.0, 5.0, 49.0, 50.5, 7.0]
    assert collapsed(tps, "tokens/s") == {2, 5}
    assert collapsed([10.0, 11.0, 35.0, 10.5], "ms") == {2}
    st = stats(tps, "tokens/s", [0.0] * 6, wanted=4)
    assert st.median == pytest.approx(50.25) and st.collapsed == 2 and not st.noisy
    few = stats(tps, "tokens/s", [0.0] * 6, wanted=5)  # not enough clean samples left: flagged, collapses unused
    assert few.noisy and "collapsed" in few.noisy_reason and few.median > 40
