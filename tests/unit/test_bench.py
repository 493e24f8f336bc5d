"""The benchmark and its meters on the tiny model; contention detection against a real busy process."""

import subprocess
import sys
import time

from optkit.bench import run_bench
from optkit.meters.energy import EnergyCounter
from optkit.meters.latency import CpuWatch, stats
from optkit.recipe import BenchSpec


def test_bench_reports_every_field(tiny_lm):
    result = run_bench(tiny_lm, BenchSpec(prompt_len=16, gen_len=4, warmup=1, repeats=3))
    assert result.prefill_ms.n >= 3 and result.decode_tokens_per_s.n >= 3
    for st in (result.prefill_ms, result.decode_tokens_per_s):
        assert 0 < st.p10 <= st.median <= st.p90
    assert result.size_mb > 0 and result.peak_memory_mb > 0
    if result.energy.status == "unavailable":
        assert result.energy.reason and result.energy.joules_per_token is None
    else:
        assert result.energy.joules_per_token > 0


def test_size_shrinks_with_bf16(tiny_lm):
    from optkit.engines.torch.casts import Cast
    from optkit.engines.torch.transform import run_step

    before = tiny_lm.size_bytes()
    run_step(Cast(), tiny_lm, Cast.Params(dtype="bfloat16"))
    assert 0.45 < tiny_lm.size_bytes() / before < 0.55


def test_energy_never_invents_a_number():
    counter = EnergyCounter("cpu")
    if counter.available:
        assert counter.read() >= 0
    else:
        assert counter.read() is None and counter.reason


BUSY = "import time\nt=time.time()\nwhile time.time()-t<3: pass"


def test_cpu_watch_sees_another_busy_process():
    # started through a parent that exits at once, so the busy process is nobody's under ours: another process
    # (its output goes nowhere: holding the starter's pipe open, it would keep subprocess.run waiting until it ended)
    starter = ("import subprocess, sys\n"
               f"print(subprocess.Popen([sys.executable, '-c', {BUSY!r}], stdout=subprocess.DEVNULL, "
               "stderr=subprocess.DEVNULL).pid)")
    pid = int(subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, check=True).stdout)
    try:
        time.sleep(0.5)
        with CpuWatch() as watch:
            time.sleep(1.0)
    finally:
        import contextlib
        import os
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert watch.share is not None and watch.share > 0.3  # one of the cores was fully used by the other process


def test_a_process_under_ours_counts_as_our_own_cpu():
    """vLLM computes in its engine-core process, a child of the worker: its CPU is the benchmark's, not another
    process's (counting this process alone flagged every vLLM sample contended on an idle machine)."""
    from optkit.meters.latency import _own_cpu

    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(0.5)
        before = _own_cpu()
        time.sleep(1.0)
        spent = _own_cpu() - before
    finally:
        busy.kill()
        busy.wait()
    assert spent > 0.5  # the child's busy second (this process only slept)


def test_stats_flags_noise_and_drops_contended_samples():
    clean = stats([10, 10.1, 9.9, 10, 10.2, 30], "ms", [0, 0, 0, 0, 0, 0.9], wanted=5)
    assert clean.median == 10 and not clean.noisy and clean.n == 5 and clean.contention == 0.9
    spread = stats([5, 10, 20, 40, 80], "ms", [0] * 5, wanted=5)
    assert spread.noisy
    contended = stats([10, 11, 12], "ms", [0.8, 0.8, 0.8], wanted=3)
    assert contended.noisy and contended.n == 3


def test_throughput_curve_and_roofline(tiny_lm):
    result = run_bench(tiny_lm, BenchSpec(prompt_len=16, gen_len=4, warmup=0, repeats=2, batch_sizes=[4],
                                              min_seconds=0.2))
    assert [p.batch_size for p in result.throughput] == [1, 4]  # batch 1 is always measured
    assert result.decode_tokens_per_s == result.throughput[0].decode_tokens_per_s
    roof = result.roofline
    assert roof.bandwidth_gb_s > 0.1 and roof.matmul_gflop_s > 0.1
    assert roof.params == tiny_lm.params > 0 and roof.bound_tokens_per_s > 0
    assert roof.achieved_fraction == result.decode_tokens_per_s.median / roof.bound_tokens_per_s
    assert roof.verdicts[0].startswith(("memory-bound at batch 1", "not limited by memory at batch 1"))
    assert roof.verdicts[1].startswith("batch 4:")


def test_roofline_verdicts_follow_the_numbers():
    from optkit.meters.roofline import analyze, device_speed

    bw = device_speed("cpu")[0]  # what analyze reads: the machine's cached figures
    weight_bytes = 400_000_000
    bound = bw * 1e9 / weight_bytes
    fast = analyze("cpu", "float32", 100_000_000, weight_bytes, 0, 0.9 * bound, {1: 0.9 * bound, 256: 1.0})
    assert fast.verdicts[0].startswith("memory-bound") and "4-bit weights could be up to ~7.1x" in fast.verdicts[0]
    assert "compute-bound" in fast.verdicts[1]  # 256 x 2 FLOP per 4-byte weight is far past any CPU's ridge
    slow = analyze("cpu", "float32", 100_000_000, weight_bytes, 0, 0.1 * bound, {1: 0.1 * bound})
    assert slow.verdicts[0].startswith("not limited by memory")


def test_prompt_lens_give_one_time_to_first_token_each(tiny_lm):
    spec = BenchSpec(prompt_len=16, prompt_lens=[480, 4], gen_len=2, warmup=1, repeats=5, min_seconds=0,
                     roofline=False)
    result = run_bench(tiny_lm, spec)
    points = result.prefill_by_prompt_len
    assert [p.prompt_len for p in points] == [4, 16, 480]  # sorted, prompt_len always included
    assert points[1].prefill_ms == result.prefill_ms  # the decode run's prefill is not measured twice
    # at least `repeats` samples each; a jittery one set aside as collapsed is counted, not used
    assert all(p.prefill_ms.median > 0 and p.prefill_ms.n + p.prefill_ms.collapsed >= 5 for p in points)
    # contention only ever adds time, so the fastest samples show the work: 120x the tokens cost more
    assert points[2].prefill_ms.p10 > points[0].prefill_ms.p10
    e2e = result.e2e_ms
    assert e2e is not None and e2e.n >= 5 and e2e.unit == "ms"
    assert e2e.median > result.prefill_ms.median  # every end-to-end sample contains its own prefill


def test_min_seconds_measures_at_least_that_long(tiny_lm):
    spec = BenchSpec(prompt_len=8, gen_len=2, warmup=0, repeats=2, max_repeats=3, min_seconds=1.0, roofline=False)
    started = time.perf_counter()
    result = run_bench(tiny_lm, spec)
    assert time.perf_counter() - started >= 1.0
    point = result.throughput[0]
    assert point.decode_seconds >= 1.0
    assert point.decode_tokens_per_s.n > 3  # past max_repeats: the duration, not the count, ended the run
    quick = run_bench(tiny_lm, spec.model_copy(update={"min_seconds": 0.0}))
    assert quick.throughput[0].decode_tokens_per_s.n <= 3


def test_bootstrap_ci_brackets_the_median():
    import random

    from optkit.meters.latency import bootstrap_ci

    rng = random.Random(1)
    values = [10 + rng.gauss(0, 1) for _ in range(40)]
    st = stats(values, "ms", [0.0] * 40, wanted=5)
    assert st.ci_low < st.median < st.ci_high
    assert min(values) < st.ci_low and st.ci_high < max(values)  # the CI of a median is narrower than the data
    assert bootstrap_ci(values) == bootstrap_ci(values)  # seeded: the same samples give the same CI
    wide = stats([10 + 5 * rng.gauss(0, 1) for _ in range(40)], "ms", [0.0] * 40, wanted=5)
    assert wide.ci_high - wide.ci_low > st.ci_high - st.ci_low


def test_halves_that_disagree_flag_the_result_noisy():
    from optkit.meters.latency import halves_gap

    steady = [100, 101, 99, 100, 102, 100, 99, 101, 100, 100]
    drifted = [100, 101, 99, 100, 102, 115, 114, 116, 115, 117]  # the machine slowed down half-way
    assert halves_gap(steady) < 0.02 and 0.10 < halves_gap(drifted) < 0.2
    ok = stats(steady, "tokens/s", [0.0] * 10, wanted=5)
    assert not ok.noisy and ok.noisy_reason is None
    bad = stats(drifted, "tokens/s", [0.0] * 10, wanted=5)
    assert bad.noisy and "first and second half" in bad.noisy_reason
    assert (bad.p90 - bad.p10) / bad.median < 0.25  # flagged by the halves check alone, not the spread rule


def test_drifting_halves_keep_the_benchmark_measuring_until_max_repeats():
    from optkit.bench import _done
    from optkit.meters.decode import Samples

    spec = BenchSpec(repeats=3, max_repeats=8, min_seconds=0)
    drifting = Samples(tps=[100, 101, 120, 121], decode_share=[0.0] * 4, prefill_share=[0.0] * 4,
                        decode_s=1.0, clean_decode_s=1.0)
    steady = Samples(tps=[100, 101, 100, 102], decode_share=[0.0] * 4, prefill_share=[0.0] * 4,
                      decode_s=1.0, clean_decode_s=1.0)
    assert _done(steady, spec) and not _done(drifting, spec)
    drifting.tps += [140] * 4  # still drifting
    drifting.decode_share += [0.0] * 4
    drifting.prefill_share += [0.0] * 4
    assert _done(drifting, spec)  # out of repeats: it stops, and stats() flags the halves instead
    assert "first and second half" in stats(drifting.tps, "tokens/s", drifting.decode_share, 3).noisy_reason


def test_noisy_reason_reaches_the_tables(tiny_lm):
    from optkit.report.html import render_html
    from optkit.report.speed import bench_table
    from optkit.results import Environment, Report, VariantResult

    result = run_bench(tiny_lm, BenchSpec(prompt_len=8, prompt_lens=[4], gen_len=2, warmup=0, repeats=2,
                                          min_seconds=0, roofline=False))
    result.decode_tokens_per_s.noisy = True
    result.decode_tokens_per_s.noisy_reason = "first and second half of the repetitions differ by 15% (over 10%)"
    report = Report(run="r", created="now", checkpoint="tiny", baseline="v",
                    environment=Environment(optkit="0", python="3", device="cpu"),
                    variants=[VariantResult(name="v", status="ok", bench=result)])
    text = bench_table(report)
    assert "(noisy)" in text and "decode batch 1: first and second half" in text
    assert "time to first token (batch 1): 4 tokens" in text and "end-to-end (prefill + 2 tokens" in text
    html = render_html(report)
    assert "TTFT 4 tokens" in html and "differ by 15%" in html


def test_bench_command_prints_a_row_per_batch_size(tiny_model, tmp_path):
    from click.testing import CliRunner

    from optkit.cli import main

    result = CliRunner().invoke(main, ["bench", str(tiny_model), "--batch-sizes", "1,2", "--prompt-len", "8",
                                       "--gen-len", "2", "--repeats", "2", "--min-seconds", "0",
                                       "--prompt-lens", "4,8", "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output[-2000:]
    lines = result.output.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("batch  decode tok/s"))
    rows = [line.split()[0] for line in lines[head + 2:head + 4]]
    assert rows == ["1", "2"]
    for key in ("time to first token (batch 1): 4 tokens", "end-to-end (prefill + 2 tokens, batch 1)",
                "peak memory:", "size:", "energy:"):
        assert key in result.output
    bad = CliRunner().invoke(main, ["bench", str(tiny_model), "--batch-sizes", "1,x"])
    assert bad.exit_code == 2 and "--batch-sizes" in bad.output


def test_contention_is_judged_against_the_cores_the_benchmark_uses():
    from optkit.meters.latency import busy_limit, uncontended

    assert busy_limit(2, cores=2) == 0.125  # every core busy: a quarter core of others is already contention
    assert busy_limit(1, cores=8) == (7 + 0.25) / 8  # seven idle cores absorb other processes
    assert busy_limit(None, cores=4) == 0.25 / 4
    shares = [0.05, 0.2, 0.268, None]  # the demo's disturbed baseline: others at 20-27% of 2 cores
    assert uncontended([1, 2, 3, 4], shares, busy_limit(2, cores=2)) == [1, 4]
