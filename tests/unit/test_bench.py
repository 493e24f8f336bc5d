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
    from optkit.methods.base import run_step
    from optkit.methods.casts import Cast

    before = tiny_lm.size_bytes()
    run_step(Cast(), tiny_lm, Cast.Params(dtype="bfloat16"))
    assert 0.45 < tiny_lm.size_bytes() / before < 0.55


def test_energy_never_invents_a_number():
    counter = EnergyCounter("cpu")
    if counter.available:
        assert counter.read() >= 0
    else:
        assert counter.read() is None and counter.reason


def test_cpu_watch_sees_another_busy_process():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"])
    try:
        time.sleep(0.5)
        with CpuWatch() as watch:
            time.sleep(1.0)
    finally:
        busy.kill()
        busy.wait()
    assert watch.share is not None and watch.share > 0.3  # one of the cores was fully used by the other process


def test_stats_flags_noise_and_drops_contended_samples():
    clean = stats([10, 10.1, 9.9, 10, 10.2, 30], "ms", [0, 0, 0, 0, 0, 0.9], wanted=5)
    assert clean.median == 10 and not clean.noisy and clean.n == 5 and clean.contention == 0.9
    spread = stats([5, 10, 20, 40, 80], "ms", [0] * 5, wanted=5)
    assert spread.noisy
    contended = stats([10, 11, 12], "ms", [0.8, 0.8, 0.8], wanted=3)
    assert contended.noisy and contended.n == 3


def test_throughput_curve_and_roofline(tiny_lm):
    result = run_bench(tiny_lm, BenchSpec(prompt_len=16, gen_len=4, warmup=0, repeats=2, batch_sizes=[4]))
    assert [p.batch_size for p in result.throughput] == [1, 4]  # batch 1 is always measured
    assert result.decode_tokens_per_s == result.throughput[0].decode_tokens_per_s
    roof = result.roofline
    assert roof.bandwidth_gb_s > 0.1 and roof.matmul_gflop_s > 0.1
    assert roof.params == tiny_lm.params > 0 and roof.bound_tokens_per_s > 0
    assert roof.achieved_fraction == result.decode_tokens_per_s.median / roof.bound_tokens_per_s
    assert roof.verdicts[0].startswith(("memory-bound at batch 1", "not limited by memory at batch 1"))
    assert roof.verdicts[1].startswith("batch 4:")


def test_roofline_verdicts_follow_the_numbers():
    from optkit.meters.roofline import analyze, device_peaks

    bw, _ = device_peaks("cpu", "float32")
    weight_bytes = 400_000_000
    bound = bw * 1e9 / weight_bytes
    fast = analyze("cpu", "float32", 100_000_000, weight_bytes, 0, 0.9 * bound, {1: 0.9 * bound, 256: 1.0})
    assert fast.verdicts[0].startswith("memory-bound") and "4-bit weights could be up to ~7.1x" in fast.verdicts[0]
    assert "compute-bound" in fast.verdicts[1]  # 256 x 2 FLOP per 4-byte weight is far past any CPU's ridge
    slow = analyze("cpu", "float32", 100_000_000, weight_bytes, 0, 0.1 * bound, {1: 0.1 * bound})
    assert slow.verdicts[0].startswith("not limited by memory")
