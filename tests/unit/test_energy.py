"""Energy on a GPU cannot be measured here (no NVIDIA GPU, no RAPL): a fake NVML board stands in for the
hardware, so the arithmetic around it (idle baseline, per-token energy, sampling cross-check, a counter stuck
at zero) is what these tests check. The real NVML path runs only on a GPU machine."""

import sys
import time
import types

import pytest

from optkit.bench import _energy
from optkit.meters.decode import Samples, one_rep
from optkit.meters.energy import EnergyCounter
from optkit.recipe import BenchSpec


def fake_nvml(watts: float, stuck: bool = False):
    """A board drawing constant `watts`; its energy counter (mJ) integrates that since start, or stays put."""
    start = time.perf_counter()
    mod = types.ModuleType("pynvml")
    mod.nvmlInit = lambda: None
    mod.nvmlDeviceGetHandleByIndex = lambda i: i
    mod.nvmlDeviceGetTotalEnergyConsumption = lambda h: 0 if stuck else int((time.perf_counter() - start) * watts * 1e3)
    mod.nvmlDeviceGetPowerUsage = lambda h: int(watts * 1000)
    return mod


@pytest.fixture()
def board(monkeypatch):
    def install(watts, stuck=False):
        monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(watts, stuck))
        return EnergyCounter("cuda")
    return install


def measure(counter, tiny_lm, reps=3):
    import torch

    spec = BenchSpec(prompt_len=8, gen_len=8, min_seconds=0)
    prompt = torch.randint(3, tiny_lm.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    samples = Samples()
    for _ in range(reps):
        one_rep(tiny_lm, prompt, spec.gen_len, counter, samples)
    return samples, spec


def test_energy_per_token_idle_baseline_and_sampling_agree_with_the_board(board, tiny_lm):
    counter = board(100.0)
    idle = counter.idle_watts(seconds=0.2)
    assert idle == pytest.approx(100.0)
    samples, spec = measure(counter, tiny_lm)
    energy = _energy(counter, samples, spec, idle)
    tokens = len(samples.tps) * spec.gen_len
    assert energy.status == "ok" and energy.joules_per_token == pytest.approx(100 * samples.decode_s / tokens, rel=0.1)
    assert energy.prefill_joules_per_token > 0
    assert energy.joules_per_token_above_idle < 0.1 * energy.joules_per_token  # a board at idle power all along
    assert 0.8 < energy.sampled_vs_counter < 1.25


def test_a_counter_stuck_at_zero_is_reported_unavailable_not_as_zero_joules(board, tiny_lm):
    counter = board(100.0, stuck=True)
    samples, spec = measure(counter, tiny_lm)
    energy = _energy(counter, samples, spec, counter.idle_watts(seconds=0.1))
    assert energy.status == "unavailable" and energy.joules_per_token is None
    assert "did not advance" in energy.reason


def test_no_counter_means_unavailable_with_a_reason():
    counter = EnergyCounter("cpu")  # this machine: no RAPL
    if counter.available:
        pytest.skip("this machine has a readable RAPL counter")
    assert counter.idle_watts(seconds=0.05) is None and "RAPL" in counter.reason


def test_the_report_line_names_every_energy_figure_and_the_reason_when_missing():
    from optkit.report.speed import energy_text
    from optkit.results import Energy

    line = energy_text(Energy(status="ok", joules_per_token=0.5, joules_per_token_above_idle=0.2, idle_watts=60,
                              prefill_joules_per_token=0.01, sampled_vs_counter=0.98, source="NVML"))
    assert all(x in line for x in ("0.5000 J per decoded token", "0.2000 above idle (60 W)", "prefill 0.0100",
                                   "power sampling / counter 0.98", "NVML"))
    assert energy_text(Energy(status="unavailable", reason="no RAPL")) == "unavailable (no RAPL)"
