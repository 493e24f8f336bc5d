"""Non-finite numbers are data: a NaN perplexity or an infinite latency is written to report.json as a string the
schema allows, read back, shown as nan / inf in text and HTML and fails the variant's gates; a worker that dies
while writing its result costs that variant only. The same faults through each executor (local and Ray), by the
worker's test-only hook (optkit/faults.py)."""

from __future__ import annotations

import json
import math

import pytest

RECIPE = """\
name: faults
model: {{checkpoint: {model}}}
variants:
  - name: base
  - name: diverged
    steps: [{{method: cast, params: {{dtype: bfloat16}}}}]
  - name: zerotime
    steps: [{{method: prune.magnitude, params: {{sparsity: 0.25}}}}]
  - name: dies
    steps: [{{method: prune.magnitude, params: {{sparsity: 0.5}}}}]
eval:
  perplexity: {{path: {text}, max_tokens: 96, window: 32, stride: 16}}
  fidelity: null
  cache: false
bench: {{prompt_len: 8, gen_len: 2, warmup: 0, repeats: 1, max_repeats: 1, min_seconds: 0, roofline: false,
        paired_rounds: 0}}
gates: {{max_ppl_increase: 50%, max_prefill_ms: 100000}}
"""
FAULTS = "diverged=nan_ppl,zerotime=inf_latency,dies=die_mid_write"


def test_nonfinite_values_round_trip_as_schema_valid_json():
    jsonschema = pytest.importorskip("jsonschema")
    from optkit.results import EvalResult, Report, VariantResult, json_schema

    bad = VariantResult(name="v", status="ok", accuracy=[
        EvalResult(task="t", metric="token_perplexity", value=math.nan, stderr=math.inf, n=3, higher_is_better=False),
        EvalResult(task="t", metric="x", value=-math.inf, n=3, higher_is_better=True)])
    report = Report(run="r", created="now", checkpoint="c", environment={"optkit": "0", "python": "3", "device": "cpu"},
                    baseline="v", variants=[bad])
    text = report.model_dump_json()
    assert '"value":"NaN"' in text and '"stderr":"Infinity"' in text and '"value":"-Infinity"' in text
    jsonschema.validate(json.loads(text), json_schema())
    back = Report.model_validate_json(text).variants[0].accuracy
    assert math.isnan(back[0].value) and back[0].stderr == math.inf and back[1].value == -math.inf


def _run(tmp_path, tiny_model, text_file, monkeypatch, kind: str):
    from optkit import executors, pipeline
    from optkit.faults import ENV
    from optkit.recipe import ExecutorSpec, load_recipe

    monkeypatch.setenv(ENV, FAULTS)
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(model=tiny_model, text=text_file))
    recipe = load_recipe(path)
    executor = executors.create(ExecutorSpec(kind=kind))
    try:
        plan = pipeline.plan(recipe, str(path), device=executor.device(recipe.device))
        return pipeline.run(plan, tmp_path / "run", say=lambda s: None, executor=executor)
    finally:
        executor.close()


def _check(report, run_dir):
    """The report and the other variants intact; the faults recorded as data; gates fail the faulty ones."""
    from optkit.gate import evaluate
    from optkit.recipe import GateSpec
    from optkit.report.html import render_html
    from optkit.report.summary import markdown, text_table
    from optkit.results import read_report

    saved = read_report(run_dir)  # the parent reads its own report back
    status = {v.name: v for v in saved.variants}
    assert [v.name for v in saved.variants] == ["base", "diverged", "zerotime", "dies"]
    base = status["base"]
    assert base.status == "ok" and math.isfinite(base.accuracy[0].value) and base.bench.prefill_ms.median > 0
    nan = status["diverged"]
    assert nan.status == "ok" and math.isnan(nan.accuracy[0].value)
    assert any("non-finite result" in w and "nan" in w for w in nan.warnings)
    inf = status["zerotime"]
    assert inf.status == "ok" and inf.bench.prefill_ms.median == math.inf and math.isfinite(inf.accuracy[0].value)
    dies = status["dies"]
    assert dies.status == "failed" and dies.crashed and "unreadable result" in dies.error
    raw = (run_dir / "report.json").read_text()
    assert '"NaN"' in raw and '"Infinity"' in raw
    verdicts = {v.variant: v for v in evaluate(saved, GateSpec(max_ppl_increase=0.5, max_prefill_ms=1e5))}
    assert not verdicts["diverged"].passed and not verdicts["zerotime"].passed and not verdicts["dies"].passed
    assert any("non-finite" in r for r in verdicts["diverged"].reasons), verdicts["diverged"].reasons
    table, html = text_table(saved), render_html(saved)
    assert " nan " in table and " inf " in table and "diverged" in markdown(saved)
    assert ">nan" in html and ">inf" in html  # shown as such
    chart = html[html.index("<svg"):html.index("</svg>")]
    assert "nan" not in chart and "inf" not in chart  # never plotted: the chart stays drawable
    from optkit.report.wording import recommend

    headline, reasons = recommend(saved)
    assert "diverged" not in headline and "zerotime" not in headline
    assert any("diverged: a non-finite result" in r for r in reasons), reasons


def test_local_executor_survives_nan_inf_and_a_worker_dying_mid_write(tmp_path, tiny_model, text_file,
                                                                      monkeypatch):
    report = _run(tmp_path, tiny_model, text_file, monkeypatch, "local")
    assert [v.status for v in report.variants] == ["ok", "ok", "ok", "failed"]
    _check(report, tmp_path / "run")


def test_ray_executor_survives_nan_inf_and_a_worker_dying_mid_write(ray_cluster, tmp_path, tiny_model, text_file,
                                                                    monkeypatch):
    report = _run(tmp_path, tiny_model, text_file, monkeypatch, "ray")
    assert [v.status for v in report.variants] == ["ok", "ok", "ok", "failed"]
    _check(report, tmp_path / "run")
