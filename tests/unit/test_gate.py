"""Gate rules on hand-built reports: pass, fail, missing data, bad input; exit codes through the CLI."""

import math
import random

import pytest

from optkit.errors import BadInput
from optkit.gate import evaluate
from optkit.recipe import GateSpec
from optkit.results import BenchResult, Energy, Environment, EvalResult, Report, VariantResult, write_model
from optkit.stats import Stats
from tests.conftest import optkit_cli


def cand(name, ppl, tps, status="ok"):
    if status != "ok":
        return VariantResult(name=name, status=status, error="boom")
    st = lambda v: Stats(median=v, p10=v, p90=v, n=5)  # noqa: E731
    return VariantResult(
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


def with_blocks(c, blocks):
    c.accuracy[0].details["block_nll"] = blocks
    c.accuracy[0].value = math.exp(sum(blocks) / len(blocks))
    return c


def base_blocks(n=40, seed=1):
    rng = random.Random(seed)  # 40 blocks of 128 tokens: 5,120 scored tokens
    return [3.0 + rng.gauss(0, 0.3) for _ in range(n)]


def paired_report(shift, noise):
    ref = base_blocks()  # the variant differs by `shift` in mean NLL, with +-noise alternating per block
    new = [b + shift + (noise if i % 2 else -noise) for i, b in enumerate(ref)]
    report = make_report(with_blocks(cand("q", 0, 30.0), new))
    with_blocks(report.variants[0], ref)
    return report


def test_planted_5_percent_regression_fails_even_noise_aware():
    report = paired_report(math.log(1.05), 0.02)
    [v] = evaluate(report, GateSpec(max_ppl_increase="2%"))
    assert not v.passed and "whole interval is above" in v.reasons[0]


def test_within_noise_difference_passes_by_default_and_fails_strict():
    report = paired_report(0.004, 0.05)  # +0.4% with per-block noise: the CI straddles the 0.2% allowed
    spec = GateSpec(max_ppl_increase="0.2%")
    [v] = evaluate(report, spec)
    assert v.passed and "within noise" in v.reasons[0]
    [strict] = evaluate(report, spec, strict=True)
    assert not strict.passed


def test_regating_the_same_report_is_stable_and_self_comparison_passes():
    report = paired_report(0.01, 0.03)
    spec = GateSpec(max_ppl_increase="5%", min_speedup=1.0)
    first = [v.line() for v in evaluate(report, spec)]
    assert first == [v.line() for v in evaluate(report, spec)]
    against_self = evaluate(report, spec, against=report)
    assert all(v.passed for v in against_self) and {v.variant for v in against_self} == {"base", "q"}
    assert "perplexity +0.00% (95% CI +0.00% to +0.00%)" in against_self[1].reasons[0]


def test_against_an_older_report_catches_a_regression():
    old = paired_report(0.0, 0.01)
    new = paired_report(math.log(1.10), 0.01)
    verdicts = {v.variant: v for v in evaluate(new, GateSpec(max_ppl_increase="5%"), against=old)}
    assert verdicts["base"].passed and not verdicts["q"].passed


def test_speed_rule_uses_the_spread_unless_strict():
    report = make_report(cand("q", 20.0, 23.0))
    report.variants[1].bench.decode_tokens_per_s.p90 = 26.0  # optimistic 1.30x, median 1.15x
    [v] = evaluate(report, GateSpec(min_speedup=1.2))
    assert v.passed and "within timing spread" in v.reasons[0]
    [s] = evaluate(report, GateSpec(min_speedup=1.2), strict=True)
    assert not s.passed


def with_task(c, correct):
    c.accuracy.append(EvalResult(task="optkit_arc_easy", metric="acc", value=sum(correct) / len(correct),
                                 stderr=0.02, n=len(correct), higher_is_better=True,
                                 details={"samples": correct}))
    return c


def task_report(base_correct, new_correct):
    report = make_report(with_task(cand("q", 20.0, 30.0), new_correct))
    with_task(report.variants[0], base_correct)
    return report


def test_planted_5_point_task_regression_on_600_samples_fails():
    rng = random.Random(3)
    base = [1 if rng.random() < 0.6 else 0 for _ in range(600)]
    flipped = [i for i, v in enumerate(base) if v][:30]  # 30 of 600 answers go wrong: -5 points
    new = [0 if i in flipped else v for i, v in enumerate(base)]
    [v] = evaluate(task_report(base, new), GateSpec(max_acc_drop="1%"))
    assert not v.passed and "beyond the 0.010 drop allowed" in v.reasons[0]
    [r] = evaluate(task_report(base, new), GateSpec(min_recovery=0.99))
    assert not r.passed


def test_task_noise_passes_unless_strict():
    rng = random.Random(4)
    base = [1 if rng.random() < 0.6 else 0 for _ in range(600)]
    new = list(base)
    for i in range(0, 40, 2):  # 20 right->wrong and 16 wrong->right flips: -0.7 points, within noise
        new[i] = 0
    for i in range(41, 200, 5)[:16]:
        new[i] = 1
    diff = (sum(new) - sum(base)) / 600
    assert -0.01 < diff < 0
    spec = GateSpec(max_acc_drop="0.3%")
    [v] = evaluate(task_report(base, new), spec)
    assert v.passed, v.reasons
    [s] = evaluate(task_report(base, new), spec, strict=True)
    assert not s.passed


def test_budget_rules_and_missing_task_results():
    report = make_report(cand("q", 20.0, 30.0))
    [v] = evaluate(report, GateSpec(max_size_mb=150, max_memory_mb=400, max_prefill_ms=120))
    assert not v.passed and v.reasons == ["size 100.0 MB (<= 150)", "peak memory 500.0 MB (> 400)",
                                          "prefill 100.0 ms (<= 120)"]
    [t] = evaluate(report, GateSpec(max_acc_drop=0.01))
    assert not t.passed and "no task accuracy" in t.reasons[0]


def test_cli_budget_options(tmp_path):
    path = tmp_path / "report.json"
    write_model(path, make_report(cand("q", 20.0, 30.0)))
    ok = optkit_cli("gate", str(path), "--max-size-mb", "200")
    assert ok.returncode == 0 and "size 100.0 MB" in ok.stdout
    bad = optkit_cli("gate", str(path), "--max-memory-mb", "100")
    assert bad.returncode == 1


def with_fidelity(c, kl, kl_se, top1, top1_se):
    c.accuracy += [EvalResult(task="fidelity", metric="kl_mean", value=kl, stderr=kl_se, n=1024,
                              higher_is_better=False),
                   EvalResult(task="fidelity", metric="top1_agreement", value=top1, stderr=top1_se, n=1024,
                              higher_is_better=True)]
    return c


def test_fidelity_rules_are_noise_aware_and_strict_on_request(tmp_path):
    report = make_report(with_fidelity(cand("close", 20.1, 30.0), 0.012, 0.002, 0.93, 0.01),
                         with_fidelity(cand("far", 25.0, 40.0), 0.5, 0.05, 0.6, 0.02),
                         with_fidelity(cand("edge", 20.2, 30.0), 0.011, 0.002, 0.89, 0.01),
                         cand("unmeasured", 20.1, 30.0))
    spec = GateSpec(max_kl=0.01, min_top1_agreement=0.9)
    v = {x.variant: x for x in evaluate(report, spec)}
    assert not v["far"].passed and "kl_mean 0.5" in v["far"].reasons[0]  # the whole interval is over
    assert v["close"].passed and v["edge"].passed  # over / under by less than the noise over prompts
    assert not v["unmeasured"].passed and "no fidelity" in v["unmeasured"].reasons[0]
    strict = {x.variant: x for x in evaluate(report, spec, strict=True)}
    assert not strict["close"].passed and not strict["edge"].passed
    path = tmp_path / "report.json"
    write_model(path, report)
    cli = optkit_cli("gate", str(path), "--max-kl", "0.01", "--min-top1-agreement", "0.9", "--variant", "close")
    assert cli.returncode == 0 and "fidelity kl_mean" in cli.stdout


def test_gate_and_report_pair_samples_by_document_id():
    """The variant's per-sample results come in another document order: the gate and the report pair them by id
    through the same function, and give the same CI as the in-order pairing."""
    from optkit.report.analysis import task_deltas

    rng = random.Random(5)
    base = [1 if rng.random() < 0.6 else 0 for _ in range(400)]
    new = [0 if i % 9 == 0 else v for i, v in enumerate(base)]  # ~27 right->wrong
    ids = list(range(400))
    order = ids[:]
    rng.shuffle(order)
    in_order = task_report(base, new)
    shuffled = task_report(base, new)
    for c, samples, doc_ids in ((in_order.variants[0], base, ids), (in_order.variants[1], new, ids),
                                (shuffled.variants[0], base, ids),
                                (shuffled.variants[1], [new[i] for i in order], order)):
        c.accuracy[-1].details.update(samples=samples, doc_ids=doc_ids)
    [expected] = task_deltas(in_order)
    [got] = task_deltas(shuffled)
    assert got.ci == expected.ci and got.right_to_wrong == expected.right_to_wrong > 0
    spec = GateSpec(max_acc_drop="1%")
    [a], [b] = evaluate(in_order, spec), evaluate(shuffled, spec)
    lo, hi = expected.ci
    assert a.reasons == b.reasons and f"95% CI {lo:+.3f} to {hi:+.3f}" in b.reasons[0]
    # different documents never pair: the gate says so instead of comparing unrelated samples
    shuffled.variants[1].accuracy[-1].details["doc_ids"] = [i + 1000 for i in order]
    [c] = evaluate(shuffled, spec)
    assert not c.passed and "no matching per-sample results" in c.reasons[0]


def spread_cand(name, ppl, tps, spread=0.04):
    """A variant with per-block NLLs and a realistic timing spread (p10/p90 at -/+ spread/2)."""
    c = cand(name, ppl, tps)
    c.accuracy[0].details["block_nll"] = [math.log(ppl) + 0.01 * math.sin(i) for i in range(30)]
    lo, hi = tps * (1 - spread / 2), tps * (1 + spread / 2)
    c.bench.decode_tokens_per_s = Stats(median=tps, p10=lo, p90=hi, n=8)
    return c


def test_against_without_rules_means_no_regression_beyond_noise(tmp_path):
    old = make_report(spread_cand("q", 21.0, 30.0), gates={"min_speedup": 5.0})  # a gate no variant meets
    old.variants[0] = spread_cand("base", 20.0, 20.0)
    path = tmp_path / "old.json"
    write_model(path, old)
    same = optkit_cli("gate", str(path), "--against", str(path))
    assert same.returncode == 0, same.stdout + same.stderr  # the recipe's min_speedup 5 is not applied
    assert "rules (no regression beyond noise" in same.stdout and "min_speedup 1.0" in same.stdout
    slower = old.model_copy(deep=True)
    for c in slower.variants:  # a planted 10% slowdown, accuracy unchanged
        st = c.bench.decode_tokens_per_s
        c.bench.decode_tokens_per_s = Stats(median=st.median * 0.9, p10=st.p10 * 0.9, p90=st.p90 * 0.9, n=8)
    new = tmp_path / "new.json"
    write_model(new, slower)
    slow = optkit_cli("gate", str(new), "--against", str(path))
    assert slow.returncode == 1, slow.stdout + slow.stderr
    assert "FAIL q" in slow.stdout and "0.90x" in slow.stdout
    other = slower.model_copy(deep=True)
    other.environment.device_name = "another CPU"
    write_model(new, other)
    skipped = optkit_cli("gate", str(new), "--against", str(path))
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "speed not compared" in skipped.stdout and "another CPU" in skipped.stdout
