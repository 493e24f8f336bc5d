"""Head-to-head timing (optkit/duel.py) on a tiny model: a copy made slower by a known delay per decode step is
found slower by about that much, interleaved rounds last at least the asked time, and a collapsed round is
retried and never used."""

import time

import pytest

from optkit.duel import head_to_head
from optkit.recipe import BenchSpec, WorkloadPoint, WorkloadSpec

SPEC = BenchSpec(prompt_len=8, gen_len=4, threads=1)


class Delayed:
    """A loaded model whose decode steps each take `delay` seconds longer (and, from call `collapse_at` on, for
    `collapse_for` calls, 40x longer: a collapse)."""

    def __init__(self, lm, delay: float, collapse_at: int | None = None, collapse_for: int = 0):
        self.lm, self.delay, self.calls = lm, delay, 0
        self.collapse = range(collapse_at, collapse_at + collapse_for) if collapse_at is not None else range(0)

    def __getattr__(self, name):
        return getattr(self.lm, name)

    def step(self, token_ids, past):
        self.calls += 1
        time.sleep(self.delay * (40 if self.calls in self.collapse else 1))
        return self.lm.step(token_ids, past)


def _timed_step(lm, n: int = 20) -> float:
    """Seconds per decode step of the undelayed model, timed here the plain way (the independent reference)."""
    import torch

    logits, past = lm.start(torch.tensor([lm.prefix + [5] * 7]))
    token = logits.argmax(-1, keepdim=True)
    t0 = time.perf_counter()
    for _ in range(n):
        logits, past = lm.step(token, past)
    return (time.perf_counter() - t0) / n


def test_a_slower_copy_is_found_slower_by_about_its_delay(tiny_lm):
    w = WorkloadSpec(requests=[WorkloadPoint(prompt=8, output=8)])
    delay = 0.01
    duel = head_to_head(tiny_lm, Delayed(tiny_lm, delay), ("plain", "slow"), w, SPEC, min_round_s=0.2, rounds=4)
    step = _timed_step(tiny_lm)
    expected = (step + delay) / step  # decode time per token, slow over plain
    assert duel.speedup.n >= 4 and duel.rounds >= 4
    assert duel.speedup.median == pytest.approx(expected, rel=0.5) and duel.speedup.ci_low > 1
    assert [s.name for s in duel.sides] == ["plain", "slow"]
    assert duel.sides[0].decode_tokens_per_s > duel.sides[1].decode_tokens_per_s


def test_latency_objective_and_a_collapse_is_retried(tiny_lm):
    w = WorkloadSpec(requests=[WorkloadPoint(prompt=8, output=4)], objective="latency")
    # the slow side collapses for a stretch of calls in its third half-round: that round is redone, not used
    slow = Delayed(tiny_lm, 0.004, collapse_at=40, collapse_for=10)
    duel = head_to_head(Delayed(tiny_lm, 0.004), slow, ("a", "b"), w, SPEC, min_round_s=0.1, rounds=4)
    assert duel.unit == "ms" and duel.collapsed >= 1 and duel.retried >= 1 and duel.rounds >= 5
    assert 0.6 < duel.speedup.median < 1.6  # the same model both sides: no difference once the collapse is out


def test_every_round_collapsed_is_kept_and_flagged_not_a_crash():
    """When each round has a collapsed half (here a's round 0 and b's round 1, 10x slower), no round is left to
    drop to: all are used, and the speed-up says it is not to be trusted (it failed on an empty median before)."""
    from optkit.duel import _result
    from optkit.workload import Totals

    point = WorkloadPoint(prompt=8, output=4)
    w = WorkloadSpec(requests=[point])

    def totals(decode_s):
        t = Totals()
        t.add(point, 1, decode_s, 1.0, 1.0 + decode_s * 1000)
        return t

    halves = {"a": [totals(1.0), totals(0.1)], "b": [totals(0.2), totals(2.0)]}
    fell = {0, 1}  # as _fell finds them over longer runs: each round has one collapsed half
    result = _result(("a", "b"), halves, [0.0, 0.0], fell, w, rounds=2, limit=0.5, min_round_s=0.0)
    ratios = sorted([(4 / 1.0) / (4 / 0.2), (4 / 0.1) / (4 / 2.0)])  # a's decode speed over b's, per round
    assert result.decode_speedup.median == pytest.approx(sum(ratios) / 2)
    assert result.decode_speedup.noisy and "every round collapsed" in result.decode_speedup.noisy_reason


def _scripted(monkeypatch, a_speeds):
    """Replaces a half-round with set figures: b decodes at 100 tokens/s, a at the next of a_speeds (cycled), and
    nobody else uses the CPU. Returns the list the halves are counted in."""
    import itertools

    from optkit import duel as duel_mod
    from optkit.workload import Totals

    point = WorkloadPoint(prompt=8, output=100)
    speeds = itertools.cycle(a_speeds)
    calls = []

    def half(lm, w, ids, min_s, energy):
        t = Totals()
        rate = next(speeds) if lm.side == "a" else 100.0
        t.add(point, 1, 100 / rate, 1.0, 1.0 + 1000 * 100 / rate)
        calls.append(lm.side)
        return t, 0.0

    monkeypatch.setattr(duel_mod, "half", half)
    return calls


class Side:
    def __init__(self, lm, side):
        self.lm, self.side = lm, side

    def __getattr__(self, name):
        return getattr(self.lm, name)


@pytest.mark.parametrize("a_speeds, rounds_run", [
    ([100.0, 100.5, 99.5], 6),  # inside the tie band from the start: settled, a tie
    ([120.0, 121.0, 119.0], 6),  # 20% faster, all of the interval beyond the band: settled, faster
    ([99.0, 107.0], 12),  # straddles the band's edge (1.03) round after round: goes on to MORE x the rounds
])
def test_rounds_go_on_only_while_the_call_is_open(monkeypatch, tiny_lm, a_speeds, rounds_run):
    """A runoff duel runs the rounds asked for, then more only while its interval straddles an edge of the tie band
    (issue 26: the search demo's two deepest mixes differ by about 3%, and six rounds called that either way)."""
    from optkit.duel import MORE
    from optkit.report.decide import call

    calls = _scripted(monkeypatch, a_speeds)
    w = WorkloadSpec(requests=[WorkloadPoint(prompt=8, output=100)])
    result = head_to_head(Side(tiny_lm, "a"), Side(tiny_lm, "b"), ("a", "b"), w, SPEC, min_round_s=0.0, rounds=6,
                          settle=True)
    assert result.rounds == rounds_run == len(calls) // 2 and result.retried == 0
    assert rounds_run <= MORE * 6
    st = result.speedup
    assert call(st.ci_low, st.ci_high) == ("faster" if a_speeds[0] > 110 else "tie")
    calls.clear()  # a paired speed-up against the baseline (settle off) stops at the rounds asked
    assert head_to_head(Side(tiny_lm, "a"), Side(tiny_lm, "b"), ("a", "b"), w, SPEC, min_round_s=0.0,
                        rounds=6).rounds == 6 == len(calls) // 2
