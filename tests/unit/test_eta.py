"""The run's time left on the progress lines (eta.py), on a fake clock: from the forecast before any variant
finished, from the finished variants' times after, several running at once, failures; the forecast's
per-variant seconds against the same sum written out by hand; and the board's lines carrying it."""

import io
from types import SimpleNamespace

import pytest

from optkit.eta import STARTUP_S, Eta, clock_text, guesses, variant_seconds
from optkit.live import Board


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_forecast_first_then_the_finished_variants_times():
    clock = Clock()
    eta = Eta(guess={"a": 100.0, "b": 50.0, "c": 50.0}, clock=clock)
    for k in "abc":
        eta.add(k)
    eta.start("a")
    assert eta.left() == 200.0 and eta.text() == "about 3:20 left (forecast)"
    clock.now += 30
    assert eta.left("a") == 70.0 and eta.left() == 170.0
    clock.now += 170  # a took 200 s, twice its forecast: the rest are expected to take twice theirs too
    eta.finish("a")
    assert eta.expected("b") == eta.expected("c") == 100.0
    eta.start("b")
    clock.now += 50
    assert eta.left() == 150.0 and eta.text() == "about 2:30 left"  # no longer the forecast alone
    clock.now += 500  # b overran: nothing of it is left, c still is
    assert eta.left("b") == 0.0 and eta.left() == 100.0


def test_a_build_no_forecast_prices_gets_no_time_even_after_others_finish(tiny_model, tmp_path, monkeypatch):
    """llm-compressor's GPTQ after SmoothQuant took 18 minutes on SmolLM2 while the line said "about 0:12 left":
    such a variant gets no guess, neither from the forecast nor from the (quick) variants that finished first."""
    from optkit import pipeline
    from optkit.recipe import parse_recipe

    monkeypatch.setenv("OPTKIT_CACHE", str(tmp_path / "cache"))
    recipe = parse_recipe({"name": "r", "model": {"checkpoint": str(tiny_model)},
                           "variants": [{"name": "base"}, {"name": "gptq", "steps": [
                               {"method": "llmc.gptq", "params": {"scheme": "W4A16", "group_size": 32}}]}],
                           "bench": {"prompt_len": 16, "gen_len": 4, "min_seconds": 1.0}})
    guess = guesses(pipeline.plan(recipe))
    assert guess["gptq"] is None and guess["base"] > STARTUP_S
    clock = Clock()
    eta = Eta(guess=guess, clock=clock)
    for k in ("base", "gptq"):
        eta.add(k)
    eta.start("base")
    assert eta.left("base") is not None and eta.left() is None and eta.text() == ""
    clock.now += 20
    eta.finish("base")
    eta.start("gptq")
    assert eta.expected("gptq") is None and eta.left("gptq") is None and eta.text() == ""
    # its minutes of calibration, once over, do not stretch the guesses for the variants after it
    eta.add("q8")
    clock.now += 1000
    eta.finish("gptq")
    assert eta.expected("q8") == 20.0


def test_without_a_forecast_the_mean_of_the_finished_and_failures_count_as_done():
    clock = Clock()
    eta = Eta(clock=clock)
    for k in "abcd":
        eta.add(k)
    eta.start("a")
    assert eta.left() is None and eta.text() == ""  # nothing tells yet
    clock.now += 60
    eta.finish("a")
    eta.start("b")
    clock.now += 2
    eta.finish("b", ok=False)  # a failure after 2 s says nothing about how long the others take
    assert eta.expected("c") == 60.0 and eta.left() == 120.0
    eta.start("c")
    clock.now += 120
    eta.finish("c")
    assert eta.expected("d") == 90.0 and eta.text() == "about 1:30 left"
    eta.start("d")
    eta.finish("d")
    assert eta.text() == ""  # all done: no time left to announce


def test_variants_running_side_by_side_share_the_queue():
    clock = Clock()
    eta = Eta(guess=dict.fromkeys("abcdef", 60.0), clock=clock)
    for k in "abcdef":
        eta.add(k)
    eta.start("a")
    eta.start("b")
    clock.now += 20
    # two busy slots: a and b end in 40 s, the four queued take 4 x 60 s over two slots
    assert eta.left() == 40.0 + 4 * 60.0 / 2


def test_clock_text():
    assert clock_text(59.6) == "1:00" and clock_text(125) == "2:05" and clock_text(3725) == "1:02:05"


def test_variant_seconds_is_the_sum_of_its_parts():
    from optkit.recipe import parse_recipe

    recipe = parse_recipe({"name": "r", "model": {"checkpoint": "m"}, "variants": [{"name": "a"}],
                           "eval": {"perplexity": {"max_tokens": 1000, "window": 100, "stride": 50},
                                    "fidelity": {"samples": 8, "seq_len": 128}},
                           "bench": {"prompt_len": 16, "gen_len": 4, "warmup": 1, "repeats": 2, "min_seconds": 0,
                                     "paired_rounds": 4, "batch_sizes": [1, 4]}})
    params, gflops, bandwidth, bound = 1e6, 10.0, 5.0, 100.0
    flops = gflops * 1e9 * 0.5  # half the peak
    roofline = 6 * 2**30 / 5e9 + 6 * 2 * 1024**3 / 10e9  # the worker measures the device: 6 copies, 6 matmuls
    decode = bound * 0.5  # half the roofline bound, tokens/s at batch 1
    ppl = 2 * params * 1000 * (100 / 50) / flops  # every token in two overlapping windows
    fid = 2 * params * 8 * 128 / flops
    per_rep = {b: 2 * params * 16 * b / flops + 4 / decode for b in (1, 4)}
    benchmark = roofline + sum(1 * per_rep[b] + 2 * per_rep[b] for b in (1, 4))  # a warm-up and two repeats each
    pairs = STARTUP_S / 2 + 2 * (4 + 1) * (2 * params * 16 / flops + 4 / decode)  # the baseline rebuilt, 5 rounds
    alone = variant_seconds(bound, int(params), gflops, bandwidth, recipe, paired=False)
    assert alone == pytest.approx(STARTUP_S + ppl + fid + benchmark)
    assert variant_seconds(bound, int(params), gflops, bandwidth, recipe, paired=True) == pytest.approx(alone + pairs)
    slow = recipe.model_copy(update={"bench": recipe.bench.model_copy(update={"min_seconds": 5.0})})
    assert variant_seconds(bound, int(params), gflops, bandwidth, slow, paired=False) == pytest.approx(
        STARTUP_S + ppl + fid + roofline + 2 * 5.0 + per_rep[1] + per_rep[4])  # at least min_seconds of decode


def test_guesses_from_the_forecast_of_a_plan(tiny_model, tmp_path, monkeypatch):
    from optkit import pipeline
    from optkit.recipe import parse_recipe

    monkeypatch.setenv("OPTKIT_CACHE", str(tmp_path / "cache"))
    recipe = parse_recipe({"name": "r", "model": {"checkpoint": str(tiny_model)},
                           "variants": [{"name": "base"}, {"name": "bf16", "steps": [
                               {"method": "cast", "params": {"dtype": "bfloat16"}}]}],
                           "bench": {"prompt_len": 16, "gen_len": 4, "min_seconds": 1.0}})
    guess = guesses(pipeline.plan(recipe))
    assert set(guess) == {"base", "bf16"}
    # the baseline's benchmark at least min_seconds; bf16 also times itself against the baseline
    assert guess["base"] > STARTUP_S + 1.0 and guess["bf16"] > guess["base"]
    # a GGUF file no variant runs in PyTorch: the forecast would convert it first, so no guess (nor conversion)
    gguf_only = SimpleNamespace(checkpoint=SimpleNamespace(kind="gguf"), jobs=[SimpleNamespace(
        engine="llamacpp", variant=SimpleNamespace(name="q8", steps=[]))])
    assert guesses(gguf_only) == {}


def test_board_lines_carry_the_runs_time_left():
    clock = Clock()
    said = []
    board = Board({"a": "[1/2] a", "b": "[2/2] b"}, said.append, eta=Eta(guess={"a": 60.0, "b": 60.0}, clock=clock))
    board.update("a", state="starting", node="n1")
    board.marker("a", "phase", "building")
    clock.now += 90
    board.update("a", state="ok")
    board.say("[1/2] a: ok in 90s" + board.left())
    board.update("b", state="starting", node="n1")
    board.marker("b", "phase", "building")
    board.update("b", state="ok")
    board.say("[2/2] b: ok in 0s" + board.left())
    board.close()
    assert said == ["[1/2] a: building on n1 · about 2:00 left (forecast)", "[1/2] a: ok in 90s · about 1:30 left",
                    "[2/2] b: building on n1 · about 1:30 left", "[2/2] b: ok in 0s"]


def test_live_board_shows_each_variants_time_left_and_the_runs():
    out = io.StringIO()
    board = Board({"a": "[1/2] a", "b": "[2/2] b"}, print, live=True, stream=out,
                  eta=Eta(guess={"a": 3600.0, "b": 3600.0}))
    board.update("a", state="building")
    board.close()
    last = out.getvalue().rsplit("\x1b[J", 1)[-1].splitlines()
    assert "left)" in last[0] and last[0].split("(~")[1].startswith(("59:", "1:00:00"))
    assert last[-1].startswith("run: about 1:59:") or last[-1] == "run: about 2:00:00 left (forecast)"
