"""Accuracy users can trust, on the tiny model: fidelity (KL, top-1) against the baseline, flips and McNemar,
the baseline running first, the result cache, task-data preflight and the labels of the perplexities."""

from __future__ import annotations

import copy

import pytest

from tests.conftest import DATA

pytest.importorskip("lm_eval")

RECIPE = """\
name: trust
model:
  checkpoint: {model}
baseline: base
variants:
  - name: same
  - name: broken
    steps:
      - method: prune.magnitude
        params: {{sparsity: 0.9}}
  - name: base
eval:
  perplexity: {{path: {text}, max_tokens: 200, window: 64, stride: 32}}
  fidelity: {{samples: 4, seq_len: 32}}
  tasks:
    - {{name: arc_easy, limit: 20, batch_size: 4}}
bench: null
"""


@pytest.fixture(scope="module")
def trust_run(tmp_path_factory, tiny_model, text_file):
    """A three-variant run, each job in this process (fast) instead of a subprocess; records the job order."""
    from optkit import pipeline
    from optkit.recipe import load_recipe
    from optkit.results import write_model
    from optkit.worker import build_and_measure

    tmp = tmp_path_factory.mktemp("trust")
    (tmp / "r.yaml").write_text(RECIPE.format(model=tiny_model, text=text_file))
    order, jobs = [], []

    def in_process(job, out, log, **_):
        order.append(job.variant.name)
        jobs.append(job)
        cand = build_and_measure(job)
        write_model(out, cand)
        return cand

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTKIT_DATA", str(DATA))
        mp.setenv("OPTKIT_CACHE", str(tmp / "cache"))
        mp.delenv("OPTKIT_NO_CACHE", raising=False)
        mp.setattr("optkit.executors.local.run_job", in_process)
        plan = pipeline.plan(load_recipe(tmp / "r.yaml"), "r.yaml")
        report = pipeline.run(plan, tmp / "run", say=lambda s: None)
    return report, order, jobs, tmp


def test_baseline_runs_first_and_saves_the_reference(trust_run):
    report, order, jobs, tmp = trust_run
    assert order == ["base", "same", "broken"]
    assert [v.name for v in report.variants] == ["same", "broken", "base"]  # the report keeps the recipe order
    assert jobs[0].is_baseline and not any(j.is_baseline for j in jobs[1:])
    assert len({j.reference.path for j in jobs}) == 1
    assert jobs[0].reference.path.startswith(str(tmp / "run" / "reference"))
    base = report.variants[2]
    assert base.status == "ok" and not any(a.task == "fidelity" for a in base.accuracy)


def test_identical_variant_is_faithful_and_broken_one_is_caught(trust_run):
    report = trust_run[0]
    same, broken = report.variants[0], report.variants[1]
    assert same.status == broken.status == "ok", (same.error, broken.error, same.warnings)
    kl, p95, agree = (same.metric("fidelity", m) for m in ("kl_mean", "kl_p95", "top1_agreement"))
    assert kl.value < 1e-4 and p95.value < 1e-4 and agree.value == 1.0
    assert kl.n == 4 * 32 and not kl.higher_is_better and agree.higher_is_better and kl.stderr is not None
    bad = {m: broken.metric("fidelity", m).value for m in ("kl_mean", "kl_p95", "top1_agreement")}
    assert bad["kl_mean"] > 1e-3 > 100 * kl.value and bad["kl_p95"] >= bad["kl_mean"] and bad["top1_agreement"] < 1


def test_flips_and_paired_ci(trust_run):
    from optkit.gate import evaluate
    from optkit.recipe import GateSpec
    from optkit.report.analysis import task_deltas

    report = trust_run[0]
    deltas = {(d.variant, d.metric): d for d in task_deltas(report)}
    same = deltas[("same", "acc")]
    assert same.right_to_wrong == same.wrong_to_right == 0 and same.mcnemar_p == 1.0
    assert same.ci[0] <= 0 <= same.ci[1] and same.n == 20
    broken = deltas[("broken", "acc")]
    verdicts = {v.variant: v for v in evaluate(report, GateSpec(max_acc_drop=0.0, variants=["same", "broken"]),
                                               strict=True)}
    assert verdicts["same"].passed
    assert broken.right_to_wrong + broken.wrong_to_right > 0 or not verdicts["broken"].passed


def test_unchanged_model_hits_the_cache(trust_run, tiny_model, text_file, monkeypatch):
    from optkit.job import VariantJob
    from optkit.results import VariantResult
    from optkit.worker import evaluate

    report, _, jobs, tmp = trust_run
    # "same" has the baseline's exact model (no steps), so the baseline's results were reused, not recomputed
    same, base = report.variants[0], report.variants[2]
    assert all(a.details.get("cached") for a in same.accuracy if a.task != "fidelity")
    assert not any(a.details.get("cached") for a in base.accuracy)
    assert [a.value for a in same.accuracy if a.task != "fidelity"] == [a.value for a in base.accuracy]

    monkeypatch.setenv("OPTKIT_DATA", str(DATA))
    monkeypatch.setenv("OPTKIT_CACHE", str(tmp / "cache"))
    job = VariantJob.model_validate({**jobs[0].model_dump(), "reference": None, "is_baseline": False})
    job.eval.tasks = None  # perplexity alone is enough to see each switch

    def run(j):
        cand = VariantResult(name="x", status="ok")
        evaluate(None, j, cand)  # a hit never touches the model, so none is needed
        return cand.accuracy[0]

    assert run(job).details["cached"] is True
    monkeypatch.setenv("OPTKIT_NO_CACHE", "1")
    with pytest.raises(AttributeError):  # cache off: evaluates, and there is no model here
        run(job)
    monkeypatch.delenv("OPTKIT_NO_CACHE")
    off = job.model_copy(deep=True)
    off.eval.cache = False
    with pytest.raises(AttributeError):
        run(off)
    other = job.model_copy(deep=True)
    other.model.dtype = "bfloat16"  # another model: another key
    with pytest.raises(AttributeError):
        run(other)


def test_preflight_refuses_missing_task_data(tmp_path, tiny_model, text_file, monkeypatch):
    from optkit import pipeline
    from optkit.errors import BadInput
    from optkit.recipe import parse_recipe

    monkeypatch.setenv("OPTKIT_DATA", str(tmp_path))  # set, but holds no task data
    recipe = parse_recipe({"name": "r", "model": {"checkpoint": str(tiny_model)}, "variants": [{"name": "v"}],
                           "eval": {"perplexity": None, "fidelity": None,  # so preflight reaches the task
                                    "tasks": [{"name": "arc_easy", "limit": 5}]}})
    with pytest.raises(BadInput, match=r"eval.tasks\[0\] \(arc_easy\).*arc_easy/test.jsonl"):
        pipeline.plan(recipe, "r.yaml")


def test_fidelity_on_a_perturbed_copy(tiny_lm, text_file, tmp_path):
    import torch

    from optkit.engines.torch.engine import TorchLM
    from optkit.evaluators.fidelity import compare, save_reference
    from optkit.recipe import FidelitySpec

    ref = save_reference(tiny_lm, FidelitySpec(samples=3, seq_len=16, path=str(text_file)), tmp_path / "r.pt")
    assert compare(tiny_lm, ref)[0].value < 1e-4
    model = copy.deepcopy(tiny_lm.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    kl, p95, agree = compare(TorchLM(model, tiny_lm.tokenizer), ref)
    assert 0 < kl.value <= p95.value and agree.value <= 1 and kl.n == 48


def test_mcnemar_exact():
    from optkit.report.analysis import mcnemar_exact

    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)


def test_report_shows_flips_fidelity_and_distinct_perplexity_labels(trust_run):
    from optkit.report.html import render_html
    from optkit.report.summary import text_table
    from optkit.results import EvalResult

    report = trust_run[0].model_copy(deep=True)
    for c in report.variants:
        c.accuracy.append(EvalResult(task="wikitext", metric="word_perplexity", value=30.0, n=2,
                                     higher_is_better=False))
    text = text_table(report)
    assert "token perplexity" in text and "wikitext word perplexity (lm-eval)" in text
    assert "KL / top-1 vs baseline" in text and "(-0/+0)" in text and "100.0%" in text
    page = render_html(report)
    assert 'id="task-deltas"' in page and 'id="fidelity"' in page and "McNemar" in page
    assert "word perplexity (lm-eval)" in page and "(cached result)" in page


def test_coarse_kl_is_exact_with_the_whole_vocabulary_and_a_close_lower_bound_with_top_k():
    import torch

    from optkit.evaluators.fidelity import coarse_kl

    gen = torch.Generator().manual_seed(0)
    base = torch.log_softmax(3 * torch.randn(50, 1000, generator=gen), -1)  # peaked, like an LM
    new = torch.log_softmax(base + 0.3 * torch.randn(50, 1000, generator=gen), -1)
    full = (base.exp() * (base - new)).sum(-1)
    everything = base.topk(1000, -1).indices
    assert torch.allclose(coarse_kl(base.gather(-1, everything), new.gather(-1, everything)), full, atol=1e-5)
    top = base.topk(256, -1).indices
    coarse = coarse_kl(base.gather(-1, top), new.gather(-1, top))
    assert (coarse <= full + 1e-5).all() and coarse.mean() > 0.9 * full.mean()


def test_cache_key_follows_what_the_steps_decided(tiny_model):
    from optkit import checkpoints
    from optkit.evaluators.cache import model_key
    from optkit.recipe import Step
    from optkit.results import SkippedModule, StepRecord

    ckpt = checkpoints.resolve(str(tiny_model))
    step = [Step(method="torch.dynamic_int8", auto_exclude={"max_ppl_increase": "5%"})]
    one = StepRecord(method="torch.dynamic_int8", modules_changed=["a", "b"],
                     modules_skipped=[SkippedModule(module="c", reason="kept")])
    other = StepRecord(method="torch.dynamic_int8", modules_changed=["a", "c"],
                       modules_skipped=[SkippedModule(module="b", reason="kept")])
    key = model_key(ckpt, "float32", "cpu", step, [one])
    assert key == model_key(ckpt, "float32", "cpu", step, [one.model_copy()])
    assert key != model_key(ckpt, "float32", "cpu", step, [other])  # same recipe step, another model


def test_cache_key_sees_a_methods_defaults(tiny_model, monkeypatch):
    """A step keyed as written would not change when a default does (llmc.gptq's act-order went from none to
    llm-compressor's static, and a cached result of the old model came back): the key holds every parameter."""
    from typing import Literal

    from optkit import checkpoints, registry
    from optkit.engines.torch.prune import MagnitudeParams
    from optkit.evaluators.cache import model_key
    from optkit.recipe import Step

    ckpt = checkpoints.resolve(str(tiny_model))
    written = [Step(method="prune.magnitude", params={"sparsity": 0.5})]
    key = model_key(ckpt, "float32", "cpu", written)
    spelled = [Step(method="prune.magnitude", params={"sparsity": 0.5, "scope": "layer"})]
    assert model_key(ckpt, "float32", "cpu", spelled) == key  # the default written out: the same model

    class NewDefault(MagnitudeParams):
        scope: Literal["layer", "global"] = "global"

    monkeypatch.setattr(registry.methods.cls("prune.magnitude"), "Params", NewDefault)
    assert model_key(ckpt, "float32", "cpu", written) != key
