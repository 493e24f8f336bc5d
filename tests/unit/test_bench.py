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
