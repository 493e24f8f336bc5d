"""Gate rules on hand-built reports: pass, fail, missing data, bad input; exit codes through the CLI."""

import pytest

from optkit.errors import BadInput
from optkit.gate import evaluate
from optkit.recipe import GateSpec
from optkit.results import BenchResult, Candidate, Energy, Environment, EvalResult, Report, Stats, write_model
from tests.conftest import optkit_cli


def cand(name, ppl, tps, status="ok"):
    if status != "ok":
        return Candidate(name=name, status=status, error="boom")
    st = lambda v: Stats(median=v, p10=v, p90=v, n=5)  # noqa: E731
    return Candidate(
        name=name, status="ok",
        accuracy=[EvalResult(task="wikitext-2", metric="token_perplexity", value=ppl, stderr=0.1, n=4000,
                             higher_is_better=False)],
        bench=BenchResult(prefill_ms=st(100.0), decode_tokens_per_s=st(tps), size_mb=100, peak_memory_mb=500,
                          energy=Energy(status="unavailable", reason="none here"), prompt_len=128, gen_len=64))


def make_report(*variants, gates=None):
    return Report(run="t", created="now", checkpoint="x", recipe={"gates": gates} if gates else {},
                  environment=Environment(optkit="0", python="3", device="cpu"), baseline="base",
                  variants=[cand("base", 20.0, 20.0), *variants])


def test_pass_and_fail_per_rule():
    report = make_report(cand("good", 20.5, 30.0), cand("worse", 22.0, 30.0), cand("slow", 20.1, 21.0))
    verdicts = {v.variant: v for v in evaluate(report, GateSpec(max_ppl_increase="5%", min_speedup=1.2))}
    assert verdicts["good"].passed
    assert not verdicts["worse"].passed and "+10.00%" in verdicts["worse"].reasons[0]
    assert not verdicts["slow"].passed and "1.05x" in verdicts["slow"].reasons[1]


def test_failed_variant_fails_the_gate():
    [v] = evaluate(make_report(cand("broken", 0, 0, status="failed")), GateSpec(min_speedup=1.0))
    assert not v.passed and "did not finish" in v.reasons[0]


def test_no_rules_and_unknown_variants_are_bad_input():
    report = make_report(cand("a", 20, 20))
    with pytest.raises(BadInput, match="no gate rules"):
        evaluate(report, GateSpec())
    with pytest.raises(BadInput, match="unknown variants"):
        evaluate(report, GateSpec(min_speedup=1, variants=["zzz"]))


def test_cli_exit_codes(tmp_path):
    path = tmp_path / "report.json"
    write_model(path, make_report(cand("fast", 20.2, 40.0), gates={"max_ppl_increase": 0.05}))
    ok = optkit_cli("gate", str(path), "--max-ppl-increase", "5%", "--min-speedup", "1.2")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS fast" in ok.stdout
    bad = optkit_cli("gate", str(path), "--min-speedup", "3")
    assert bad.returncode == 1 and "FAIL fast" in bad.stdout
    from_recipe = optkit_cli("gate", str(tmp_path))
    assert from_recipe.returncode == 0 and "perplexity +1.00%" in from_recipe.stdout
    missing = optkit_cli("gate", str(tmp_path / "nope.json"), "--min-speedup", "1")
    assert missing.returncode == 2 and "report not found" in missing.stderr
    garbled = optkit_cli("gate", str(path), "--max-ppl-increase", "lots")
    assert garbled.returncode == 2 and len(garbled.stderr.strip().splitlines()) == 1
