"""ONNX export and onnxruntime quantization on the tiny random Llama: the export matches PyTorch (and a
planted mismatch is caught), each ORT quantization replaces nodes and the result still runs perplexity and
the benchmark, and preflight refuses steps on the wrong side of onnx.export."""

import math

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.exporters.onnx")

from optkit import pipeline  # noqa: E402
from optkit.backends.ort import OrtLM  # noqa: E402
from optkit.errors import BadInput, RunError  # noqa: E402
from optkit.evaluators.perplexity import token_nlls  # noqa: E402
from optkit.methods.base import apply_steps  # noqa: E402
from optkit.methods.onnx_export import ExportParams, validate  # noqa: E402
from optkit.recipe import BenchSpec, Step, parse_recipe  # noqa: E402

TOKENS = list(range(3, 131))


@pytest.fixture(scope="module")
def exported(tiny_model):
    """One export shared by the tests that only read it (the export costs a second or two)."""
    from optkit import models

    lm = models.load(models.resolve(str(tiny_model)))
    lm, records = apply_steps(lm, [Step(method="onnx.export")])
    return lm, records[0]


def test_export_switches_backend_and_validates(exported, tiny_lm):
    lm, record = exported
    assert isinstance(lm, OrtLM) and lm.backend == "onnxruntime"
    check = record.details["validation"]
    assert check["max_abs_diff"] < 1e-4 and check["cache_max_abs_diff"] < 1e-4
    assert check["top1_agreement"] == 1.0
    assert lm.size_bytes() > 0 and lm.params == tiny_lm.params and lm.config.vocab_size == lm.vocab_size
    # same perplexity as PyTorch on the same tokens
    ort_nll = token_nlls(lm, TOKENS, 64, 32)
    torch_nll = token_nlls(tiny_lm, TOKENS, 64, 32)
    assert len(ort_nll) == len(torch_nll) == len(TOKENS) - 1
    assert max(abs(a - b) for a, b in zip(ort_nll, torch_nll)) < 1e-4


def test_planted_mismatch_is_caught(exported, tiny_lm, tmp_path):
    import onnx
    from onnx import numpy_helper

    lm, _ = exported
    model = onnx.load(str(lm.model_path))
    # perturb the largest initializer (a weight matrix) of the exported graph
    init = max(model.graph.initializer, key=lambda t: math.prod(t.dims))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5 + 0.05, init.name))
    onnx.save(model, str(tmp_path / "model.onnx"))
    bad = lm.with_model(tmp_path / "model.onnx")
    with pytest.raises(RunError, match="does not match PyTorch"):
        validate(tiny_lm, bad, ExportParams())
    assert validate(tiny_lm, lm, ExportParams())["max_abs_diff"] < 1e-4  # the real export still passes


@pytest.mark.parametrize("step, new_op", [
    (Step(method="ort.dynamic_int8", params={"per_channel": True}), "MatMulInteger"),
    (Step(method="ort.int4", params={"block_size": 32, "exclude": ["lm_head"]}), "MatMulNBits"),
])
def test_ort_quantization_applies_and_runs(tiny_model, tiny_lm, step, new_op):
    from optkit import models
    from optkit.bench import run_bench

    lm = models.load(models.resolve(str(tiny_model)))
    lm, (export, record) = apply_steps(lm, [Step(method="onnx.export"), step])
    assert record.modules_changed and all(n.endswith("MatMul") for n in record.modules_changed)
    assert new_op in record.details["nodes_added_by_type"]
    assert record.details["size_bytes"] < record.details["size_bytes_before"]
    skipped = {s.module: s.reason for s in record.modules_skipped}
    if "exclude" in step.params:
        assert skipped == {"/lm_head/MatMul": "excluded by pattern 'lm_head'"}
        assert "/lm_head/MatMul" not in record.modules_changed
    nll = token_nlls(lm, TOKENS, 64, 32)
    ref = token_nlls(tiny_lm, TOKENS, 64, 32)
    assert abs(sum(nll) / len(nll) - sum(ref) / len(ref)) < 0.05  # quantized, yet close
    result = run_bench(lm, BenchSpec(prompt_len=16, gen_len=4, warmup=0, repeats=1, max_repeats=1))
    assert result.decode_tokens_per_s.median > 0 and result.size_mb * 2**20 == lm.size_bytes()


def test_quantization_that_changes_nothing_is_an_error(exported):
    from optkit import registry

    lm, _ = exported
    method = registry.get("ort.dynamic_int8")
    with pytest.raises(RunError, match="changed no nodes"):
        method.convert(lm, method.Params(include=["no_such_node"]))


def test_ort_logits_shape_and_cache(exported):
    lm, _ = exported
    ids = torch.tensor([[5, 17, 42, 99]])
    full, _ = lm.logits(ids)
    last, past = lm.start(ids[:, :3])
    step, past = lm.step(ids[:, 3:], past)
    assert full.shape == (1, 4, lm.vocab_size) and past[0].shape[2] == 4
    assert torch.allclose(step, full[:, -1], atol=1e-5)


def _plan(tiny_model, *steps):
    recipe = parse_recipe({"name": "t", "model": {"checkpoint": str(tiny_model)},
                           "variants": [{"name": "v", "steps": list(steps)}]})
    return pipeline.plan(recipe)


def test_preflight_refuses_steps_on_the_wrong_side_of_export(tiny_model):
    with pytest.raises(BadInput, match=r"needs an ONNX model; add \{method: onnx.export\} before this step"):
        _plan(tiny_model, {"method": "ort.int4"})
    with pytest.raises(BadInput, match="is a PyTorch method but an earlier step exported"):
        _plan(tiny_model, {"method": "onnx.export"}, {"method": "torch.dynamic_int8"})
    with pytest.raises(BadInput, match="exports float32 models only"):
        _plan(tiny_model, {"method": "cast", "params": {"dtype": "bfloat16"}}, {"method": "onnx.export"})
    with pytest.raises(BadInput, match="already quantized"):
        _plan(tiny_model, {"method": "onnx.export"}, {"method": "ort.dynamic_int8"}, {"method": "ort.int4"})
    with pytest.raises(BadInput, match="not a power of 2"):
        _plan(tiny_model, {"method": "onnx.export"}, {"method": "ort.int4", "params": {"block_size": 48}})
    plan = _plan(tiny_model, {"method": "onnx.export"}, {"method": "ort.int4", "params": {"block_size": 32}})
    assert [s.method for s in plan.jobs[0].variant.steps] == ["onnx.export", "ort.int4"]
