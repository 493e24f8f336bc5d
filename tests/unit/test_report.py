"""Report rendering: recommendation, frontier, escaping, markdown, schema."""

import json

from optkit.report.analysis import frontier, rows
from optkit.report.html import render_html
from optkit.report.summary import markdown, text_table
from optkit.report.wording import recommend
from optkit.results import json_schema
from tests.unit.test_gate import cand, make_report


def test_recommends_fastest_within_budget_and_explains_the_rest():
    report = make_report(cand("int4", 20.6, 40.0), cand("int8", 40.0, 50.0), cand("bf16", 20.0, 25.0),
                         cand("broken", 0, 0, status="failed"))
    headline, rejected = recommend(report)
    assert headline.startswith("Ship int4: 2.00x decode speed") and "perplexity +3.0%" in headline
    text = " | ".join(rejected)
    assert "int8: perplexity +100.0%, over the 5% budget" in text
    assert "bf16: slower than int4" in text and "broken: failed (boom)" in text
    assert set(frontier(rows(report))) == {"int4", "int8", "bf16"}


def test_keeps_baseline_when_nothing_qualifies():
    headline, _ = recommend(make_report(cand("bad", 30.0, 40.0)))
    assert headline.startswith("Keep the baseline (base)")


def test_budget_comes_from_recipe_gates():
    report = make_report(cand("int8", 23.0, 50.0), gates={"max_ppl_increase": 0.2})
    assert recommend(report)[0].startswith("Ship int8")


def test_html_is_self_contained_and_escaped():
    report = make_report(cand("broken", 0, 0, status="failed"), cand("int4", 20.5, 40.0))
    report.variants[1].error = "<script>alert(1)</script>"
    report.checkpoint = "<img src=x onerror=alert(1)>"
    page = render_html(report)
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;" in page
    assert "http://" not in page and "https://" not in page  # opens offline
    assert page.count('class="point"') == 2 and 'class="frontier"' in page


def test_text_and_markdown_tables():
    report = make_report(cand("int4", 20.5, 40.0))
    assert "int4 *" in text_table(report) and "Ship int4" in text_table(report)
    md = markdown(report)
    assert md.splitlines()[4].startswith("| variant |") and "2.00x" in md


def test_schema_has_the_contract_fields():
    schema = json_schema()
    text = json.dumps(schema)
    for key in ("schema_version", "environment", "baseline", "variants", "modules_changed", "modules_skipped",
                "higher_is_better", "prefill_ms", "decode_tokens_per_s", "peak_memory_mb", "size_mb",
                "joules_per_token"):
        assert key in text


def test_without_benchmark_the_report_speaks_of_accuracy_only():
    report = make_report(cand("ok8", 20.5, 1.0), cand("bad", 30.0, 1.0))
    for v in report.variants:
        v.bench = None
    headline, rejected = recommend(report)
    assert headline.startswith("No speed was measured") and "ok8" in headline
    assert rejected == ["bad: perplexity +50.0%, over the 5% budget"]


def test_details_show_step_facts_and_energy_labels():
    from optkit.results import StepRecord

    report = make_report(cand("int4", 20.6, 40.0))
    details = {"overall_sparsity": 0.5, "sparsity": {"model.layers.0.mlp.up_proj": 0.5},
               "validation": {"max_abs_diff": 8.6e-05, "top1": 1.0}}
    report.variants[1].steps.append(StepRecord(method="prune.wanda", details=details))
    report.variants[1].bench.energy.status, report.variants[1].bench.energy.joules_per_token = "ok", 0.25
    page = render_html(report)
    assert "overall_sparsity 0.5" in page and "validation.max_abs_diff 8.6e-05" in page
    assert "sparsity.model" not in page  # per-layer tables stay in report.json
    assert "0.25 J/token" in page


def test_a_single_model_gets_no_comparison_sentence():
    headline, rejected = recommend(make_report())  # optkit eval / bench: the baseline alone
    assert headline.startswith("One model measured (base)") and not rejected
    assert "within" not in headline and "Ship" not in headline


def test_a_disturbed_baseline_does_not_inflate_the_speed_up():
    """The demo's case: the baseline's benchmark ran while another process used the CPU (16.4 tokens/s instead
    of ~25, flagged noisy); the variant's paired rounds against the baseline, in its own process, say 1.8x."""
    from optkit.results import PairedSpeed
    from optkit.stats import Stats

    report = make_report(cand("int4", 20.5, 43.5))
    base, int4 = report.variants
    base.bench.decode_tokens_per_s = Stats(median=16.4, p10=15.0, p90=22.0, n=5, noisy=True,
                                           noisy_reason="only 3 of 5 samples taken while other processes left "
                                                        "the benchmark's cores alone")
    paired = Stats(median=1.8, p10=1.75, p90=1.86, n=4)
    int4.bench.paired = PairedSpeed(baseline="base", rounds=4, decode_speedup=paired)
    headline, _ = recommend(report)
    assert headline.startswith("Ship int4: 1.80x decode speed") and "2.65x" not in headline
    assert "uncertain" not in headline and 'id="noisy-notice"' not in render_html(report)
    [r] = [r for r in rows(report) if r.name == "int4"]
    assert r.speedup_how == "paired over 4 rounds"
    # the table says why 1.80x is not 43.5 / 16.4 tokens/s
    legend = "speed-up: each variant timed against the baseline in alternating rounds in one process"
    assert legend in text_table(report) and legend in render_html(report) and legend in markdown(report)
    # without the paired rounds, the ratio of the two runs is uncertain and never quoted as a plain number
    int4.bench.paired = None
    headline, _ = recommend(report)
    assert "uncertain" in headline and "2.65x decode" not in headline and "the baseline's decode timing noisy" \
        in headline
    page = render_html(report)
    assert 'id="noisy-notice"' in page and "int4: decode speed-up uncertain" in page
    assert "(noisy)" in text_table(report)
    assert "speed-up: each variant" not in text_table(report) and "speed-up: each variant" not in page


def test_a_baseline_that_drifted_flags_speed_ups_from_separate_runs():
    """No paired rounds (no room for two models): the baseline benchmarked again after the last variant says
    whether the machine drifted between the separate runs. Within the spread nothing changes; beyond it every
    unpaired speed-up is uncertain, with the drift named, and the recommendation does not quote it plainly."""
    from optkit.stats import Stats

    report = make_report(cand("int4", 20.5, 40.0))
    base = report.variants[0]
    again = base.model_copy(deep=True)
    again.bench.decode_tokens_per_s = Stats(median=20.4, p10=19.8, p90=21.0, n=5)  # within its spread (6%)
    report.baseline_again = again
    [r] = [r for r in rows(report) if r.name == "int4"]
    assert r.speedup == 2.0 and r.speedup_noisy is None
    again.bench.decode_tokens_per_s = Stats(median=14.0, p10=13.8, p90=14.3, n=5)  # the machine slowed: -30%
    [r] = [r for r in rows(report) if r.name == "int4"]
    assert r.speedup == 2.0 and "moved -30%" in r.speedup_noisy and "drifted" in r.speedup_noisy
    headline, _ = recommend(report)
    assert "uncertain" in headline and "drifted" in headline


def _with_blocks(c, nlls):
    c.accuracy[0].details["block_nll"] = nlls
    return c


def test_report_vs_another_variant_pairs_on_the_same_blocks(tmp_path):
    """optkit report --vs: each variant's perplexity against a chosen variant (not the baseline), with the CI
    from per-block differences: a small consistent gain is told apart, one lost in the noise is not."""
    import math

    from click.testing import CliRunner

    from optkit.cli import main
    from optkit.report.summary import versus

    noise = [0.3 * math.sin(i) for i in range(32)]
    rtn = [3.4 + n for n in noise]
    report = make_report(_with_blocks(cand("rtn", 30.0, 1.0), rtn),
                         _with_blocks(cand("gptq", 29.0, 1.0), [x - 0.02 + 0.005 * math.cos(i) for i, x in
                                                                 enumerate(rtn)]),
                         _with_blocks(cand("same", 30.0, 1.0), [x + 0.02 * math.cos(3 * i) for i, x in
                                                                 enumerate(rtn)]),
                         _with_blocks(cand("short", 30.0, 1.0), rtn[:8]))
    _with_blocks(report.variants[0], [3.0 + n for n in noise])
    lines = {ln.split()[0]: ln for ln in versus(report, "rtn").splitlines()[2:] if ln.strip()}
    assert "rtn" not in lines
    assert lines["gptq"].split()[1] == "29.000" and "-3.3%" in lines["gptq"] and lines["gptq"].endswith("lower")
    assert lines["base"].endswith("lower") and lines["same"].endswith("not told apart")
    assert lines["short"].endswith("not paired (other tokens)")
    assert "paired over 32 blocks" in versus(report, "rtn")

    (tmp_path / "report.json").write_text(report.model_dump_json())
    ok = CliRunner().invoke(main, ["report", str(tmp_path), "--vs", "rtn"])
    assert ok.exit_code == 0 and "Δppl vs rtn" in ok.output
    for args, says in ((["--vs", "rtm"], "no such variant in this report; pick one of base, rtn, gptq"),
                       (["--vs", "rtn", "--format", "md"], "--vs prints a text table")):
        bad = CliRunner().invoke(main, ["report", str(tmp_path), *args])
        assert bad.exit_code == 2 and says in bad.output and len(bad.output.strip().splitlines()) == 1


def test_a_lower_perplexity_within_the_noise_earns_no_place_on_the_frontier():
    """The demo's Q8_0 file scored 0.002% below the Q4_1 file and decodes 25% slower; the paired CI could not tell
    the two perplexities apart, yet Q8_0 was starred. With the same gap measured without noise it keeps its star."""
    import math

    base_nll = [3.0 + 0.1 * (i % 7) for i in range(64)]

    def scored(c, nll):
        c.accuracy[0].value = math.exp(sum(nll) / len(nll))
        c.accuracy[0].details = {"block_nll": nll}
        return c

    def run(wobble):
        q8 = [b + 0.001 + (wobble if i % 2 else -wobble) for i, b in enumerate(base_nll)]
        report = make_report(scored(cand("q8", 0, 60.0), q8), scored(cand("q4", 0, 80.0),
                                                                     [b + 0.0011 for b in base_nll]))
        scored(report.variants[0], base_nll)
        return report

    noisy = run(0.02)
    by = {r.name: r for r in rows(noisy)}
    assert by["q8"].ppl < by["q4"].ppl  # lower, but inside the noise
    # base is lower than q4 beyond the noise (though not told apart from q8, which is off the frontier)
    assert set(frontier(rows(noisy))) == {"base", "q4"}
    assert "q8 *" not in text_table(noisy) and "paired 95% CI" in text_table(noisy)
    assert set(frontier(rows(run(0.0)))) == {"base", "q8", "q4"}
    # the chart plots what the frontier ranks by: speed-ups (paired where measured), not each run's tokens/s
    assert "decode speed-up vs base" in render_html(noisy) and "4.00x</text>" in render_html(noisy)


def rich_report(*names: str):
    """The baseline and variants benchmarked at batch sizes 1, 4 and 16 (tokens/s: batch 1's x batch^0.8, p10-p90
    +-10%) and scored on one task, 40 documents, per-document samples: what the batch-size and accuracy-delta
    charts draw."""
    from optkit.results import EvalResult, ThroughputPoint
    from optkit.stats import Stats

    report = make_report(*(cand(n, 20.0 + 0.5 * i, 20.0 * (i + 1.5)) for i, n in enumerate(names)))
    for i, c in enumerate(report.variants):
        one = c.bench.decode_tokens_per_s.median
        c.bench.throughput = [ThroughputPoint(batch_size=b, prefill_ms=Stats(median=50, p10=45, p90=55, n=5),
                                              decode_tokens_per_s=Stats(median=one * b**0.8, p10=0.9 * one * b**0.8,
                                                                        p90=1.1 * one * b**0.8, n=5))
                              for b in (1, 4, 16)]
        samples = [1 if (d + i) % 3 else 0 for d in range(40)]  # the baseline 27/40 right, the others moved
        c.accuracy.append(EvalResult(task="arc_easy", metric="acc", value=sum(samples) / 40, n=40,
                                     higher_is_better=True, details={"samples": samples,
                                                                     "doc_ids": list(range(40))}))
    return report


def test_html_charts_speed_by_batch_size_and_accuracy_deltas_with_ci_bars():
    import re

    from optkit.report.analysis import task_deltas

    report = rich_report("int4", "int8")
    page = render_html(report)
    batch = re.search(r'<svg id="batch-chart".*?</svg>', page, re.S).group(0)
    assert batch.count('class="series"') == 3  # a line per variant, ending in its name
    for name in ("base", "int4", "int8"):
        assert f">{name}</text></g>" in batch
    series = re.findall(r'<polyline points="([^"]+)"', batch)
    ys = [[float(p.split(",")[1]) for p in s.split()] for s in series]
    assert all(y[0] > y[1] > y[2] for y in ys)  # tokens/s grow with the batch: each line climbs (svg y is down)
    assert ys[0][2] > ys[1][2] > ys[2][2]  # and the baseline (20 tok/s at batch 1) slowest, int8 (50) fastest
    panels = re.findall(r'<svg class="delta-chart".*?</svg>', page, re.S)
    assert len(panels) == 2 and "token perplexity" in panels[0] and "arc_easy acc" in panels[1]
    assert "(higher is better)" in panels[1]
    for d in task_deltas(report):  # the figures beside each bar are the paired deltas and their CIs
        assert f"{d.delta:+.3f} [{d.ci[0]:+.3f}, {d.ci[1]:+.3f}]" in panels[1]
    assert panels[1].count('<g class="delta">') == 2 and panels[1].count("<line") >= 2 + 3 * 2  # axes, 3 per bar
    one_batch = make_report(cand("int4", 20.6, 40.0))
    assert 'id="batch-chart"' not in render_html(one_batch)  # one batch size: no curve to draw


def test_template_escapes_a_variant_name_with_markup():
    evil = "<script>alert(1)</script>"
    report = rich_report(evil)
    report.variants[1].warnings.append('a "quoted" <b>warning</b> & more')
    page = render_html(report)
    assert "<script" not in page and "<b>warning" not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert page.count(escaped) >= 6  # frontier label, batch line, delta rows, tables, details
    assert "&#34;quoted&#34; &lt;b&gt;warning&lt;/b&gt; &amp; more" in page
    assert 'id="search"' not in page  # the search's section renders only with report.search


def test_no_hand_escaping_left_in_the_report_code():
    from pathlib import Path

    import optkit.report

    for path in Path(optkit.report.__file__).parent.glob("*.py"):
        assert "html.escape" not in path.read_text() and "from html import" not in path.read_text(), path


def test_search_block_renders_report_search_through_its_template():
    from optkit.searchrecord import GroupSensitivity, SearchCandidate, SearchResult, Sensitivity
    from optkit.stats import Stats

    base = make_report(cand("int4", 20.6, 40.0))
    assert 'id="search"' not in render_html(base)
    sp = Stats(median=1.4, p10=1.3, p90=1.5, n=4, unit="x")
    res = SearchResult(source="m.gguf", max_ppl_increase=0.05, time_budget_s=600, chosen="<mix>", candidates=[
        SearchCandidate(name="source", kind="source", stage="benchmark"),
        SearchCandidate(name="<mix>", kind="mix", stage="benchmark", ppl_delta=0.03, speedup=sp, size_mb=70.0),
        SearchCandidate(name="q4_0", kind="uniform", stage="perplexity", ppl_delta=0.12, left="over budget",
                        speedup=Stats(median=1.6, p10=1.5, p90=1.7, n=4, unit="x"))],
        sensitivity=Sensitivity(low="Q4_0", tokens=64, groups=[GroupSensitivity(
            group="ffn_down <0-7>", pattern="x", tensors=8, weights=10**6, bytes_saved=2**20, kl=0.0123, rank=1)]))
    page = render_html(base.model_copy(update={"search": res}))
    section = page[page.index('<h2 id="search">'):page.index("<h2>Variants</h2>")]
    assert 'id="search-plot"' in section and "budget +5%" in section
    assert "&lt;mix&gt;" in section and "<mix>" not in section  # names escaped by the template
    assert section.count('class="eliminated"') == 1 and section.count('class="candidate"') == 2
    assert 'id="sensitivity"' in section and "ffn_down &lt;0-7&gt;" in section and "0.01230" in section
    assert "over budget" in section and "1.40x [1.30-1.50]" in section


def test_served_model_checks_render_through_the_template():
    from optkit.results import LogitAgreement, TokenizerCheck

    report = make_report(cand("q4", 20.5, 40.0))
    check = TokenizerCheck(model="<m>.gguf", scored_with="built from the GGUF", reference="llama.cpp", samples=12,
                           mismatches=1, round_trip_failures=0, result="disagrees", detail="id 5 vs <6>")
    for c in report.variants:
        c.tokenizer_checks = [check]
    report.variants[1].logit_agreement = LogitAgreement(model="<m>.gguf", engines=["llamacpp", "torch"], tokens=64,
                                                        kl_mean=0.0123, top1_agreement=0.984, result="agrees")
    page = render_html(report)
    assert '<tr class="disagrees"><td>&lt;m&gt;.gguf</td><td>built from the GGUF</td><td>llama.cpp</td><td>12</td>' \
           "<td>disagrees</td><td>id 5 vs &lt;6&gt;</td><td>base, q4</td></tr>" in page  # one row for both variants
    assert "<td>llamacpp vs torch</td><td>0.0123</td><td>98.4%</td><td>64</td><td>agrees</td>" in page
    assert 'id="served"' not in render_html(make_report(cand("q4", 20.5, 40.0)))


def test_a_disagreeing_engine_tokenizer_is_named_where_the_recommendation_says_how_to_deploy():
    """OpenVINO: openvino-tokenizers' conversion disagrees, so optkit scored and timed the variant with the model's
    own tokenizer; the recommendation must not send users to the engine's converted one unwarned."""
    from optkit.results import TokenizerCheck

    report = make_report(cand("int8", 20.2, 60.0))
    report.variants[1].engine = "openvino"
    assert recommend(report)[0].count("Deploy it in OpenVINO.") == 1
    report.variants[1].tokenizer_checks = [TokenizerCheck(
        model="m", scored_with="transformers' tokenizer on m", reference="openvino-tokenizers' conversion",
        samples=28, mismatches=2, round_trip_failures=0, result="disagrees", detail="emoji")]
    headline = recommend(report)[0]
    assert ("Deploy it in OpenVINO; serve it with the tokenizer it was scored and timed with (transformers' "
            "tokenizer on m): openvino-tokenizers' conversion disagrees with it on 2 of 28 samples.") in headline
