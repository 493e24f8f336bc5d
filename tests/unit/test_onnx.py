"""ONNX export and onnxruntime quantization on the tiny random Llama: the export matches PyTorch (and a
planted mismatch is caught), `optkit export` writes a folder that loads as a checkpoint, each ORT
quantization (dynamic, int4, static QDQ) replaces nodes and the result still runs perplexity and the
benchmark, auto_exclude keeps a planted sensitive node in float, and preflight refuses steps on the wrong
side of onnx.export."""

import math

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from optkit import pipeline  # noqa: E402
from optkit.common.validation import validate  # noqa: E402
from optkit.engines.method import apply_steps  # noqa: E402
from optkit.engines.onnxruntime.engine import OrtLM  # noqa: E402
from optkit.engines.onnxruntime.export import ExportParams  # noqa: E402
from optkit.errors import BadInput, RunError  # noqa: E402
from optkit.evaluators.perplexity import token_nlls  # noqa: E402
from optkit.recipe import BenchSpec, Step, parse_recipe  # noqa: E402

TOKENS = list(range(3, 131))


@pytest.fixture(scope="module")
def exported(tiny_model):
    """One export shared by the tests that only read it (the export costs a second or two)."""
    from optkit import checkpoints, loading

    lm = loading.load(checkpoints.resolve(str(tiny_model)))
    lm, records = apply_steps(lm, [Step(method="onnx.export")])
    return lm, records[0]


def test_export_switches_backend_and_validates(exported, tiny_lm):
    lm, record = exported
    assert isinstance(lm, OrtLM) and lm.engine == "onnxruntime"
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
    (Step(method="ort.static_int8", params={"calibration": {"samples": 4, "seq_len": 32}}), "QuantizeLinear"),
])
def test_ort_quantization_applies_and_runs(tiny_model, tiny_lm, text_file, step, new_op):
    from optkit import checkpoints, loading
    from optkit.bench import run_bench

    if step.method == "ort.static_int8":  # calibrate on the test corpus, not on $OPTKIT_DATA
        step = Step(method=step.method, params={"calibration": {**step.params["calibration"], "path": str(text_file)}})
    lm = loading.load(checkpoints.resolve(str(tiny_model)))
    lm, (export, record) = apply_steps(lm, [Step(method="onnx.export"), step])
    assert record.modules_changed and all(n.endswith("MatMul") for n in record.modules_changed)
    if step.method == "ort.static_int8":  # QDQ keeps each MatMul (same name) and feeds it dequantized int8
        assert len(record.modules_changed) == 2 * 7 + 1 and record.details["nodes_added_by_type"]["DequantizeLinear"]
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
        method.apply(lm, method.Params(include=["no_such_node"]))


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


def test_export_cli_writes_a_checkpoint_folder(tiny_model, tiny_lm, tmp_path):
    import json

    from click.testing import CliRunner

    from optkit import checkpoints, loading
    from optkit.cli import main

    out = tmp_path / "onnx"
    run = CliRunner().invoke(main, ["export", str(tiny_model), "--format", "onnx", "-o", str(out)])
    assert run.exit_code == 0, run.output
    assert "top-1 agreement 100.0%" in run.output and "max |logit diff|" in run.output
    assert {"model.onnx", "config.json", "tokenizer.json", "optkit-export.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnx-")]  # the work folder is gone
    ckpt = checkpoints.resolve(str(out))
    assert ckpt.kind == "onnx"
    lm = loading.load(ckpt)
    assert isinstance(lm, OrtLM) and lm.params == tiny_lm.params
    ort_nll, torch_nll = token_nlls(lm, TOKENS, 64, 32), token_nlls(tiny_lm, TOKENS, 64, 32)
    assert max(abs(a - b) for a, b in zip(ort_nll, torch_nll)) < 1e-4
    # a checkpoint for recipes: ort.* steps may follow, PyTorch steps and other dtypes may not
    assert _plan(out, {"method": "ort.dynamic_int8"}).checkpoint.kind == "onnx"
    with pytest.raises(BadInput, match="is a PyTorch method but an earlier step exported"):
        _plan(out, {"method": "torch.dynamic_int8"})
    # and for optkit eval, end to end through the worker process
    run = CliRunner().invoke(main, ["eval", str(out), "--max-tokens", "64", "-o", str(tmp_path / "eval")])
    assert run.exit_code == 0, run.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    ppl = report["variants"][0]["accuracy"][0]["value"]
    assert report["variants"][0]["status"] == "ok" and 1 < ppl < 2 * tiny_lm.vocab_size
    # bad input: one line naming the problem, exit 2
    for args in (["export", str(tmp_path / "missing"), "-o", str(tmp_path / "x")],
                 ["export", str(tiny_model), "--format", "tflite", "-o", str(tmp_path / "x")],
                 ["export", str(tiny_model), "-o", str(out)],
                 ["export", str(out), "-o", str(tmp_path / "x")]):
        run = CliRunner().invoke(main, args)
        assert run.exit_code == 2 and run.output.startswith("optkit: error:") and run.output.count("\n") == 1, args


@pytest.fixture(scope="module")
def fragile(tiny_model, text_file):
    """The tiny model trained briefly on the test corpus (so damage raises perplexity) with a planted weakness
    in both down_proj nodes: intermediate channel 7 is dead (zero gate/up rows) and down_proj reads it with a
    weight 1000x the others. Harmless in float; per-tensor int8 then rounds the rest of the matrix to zero."""
    from optkit import checkpoints, loading

    lm = loading.load(checkpoints.resolve(str(tiny_model)))
    ids = torch.tensor(lm.encode(text_file.read_text()))
    torch.manual_seed(0)
    opt = torch.optim.Adam(lm.model.parameters(), lr=1e-2)
    lm.model.train()
    for _ in range(12):
        batch = torch.stack([ids[s:s + 65] for s in torch.randint(0, len(ids) - 65, (8,)).tolist()])
        loss = lm.model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.model.eval()
    with torch.no_grad():
        for layer in lm.model.model.layers:
            mlp = layer.mlp
            mlp.gate_proj.weight[7] = mlp.up_proj.weight[7] = mlp.down_proj.weight[:, 7] = 0
            mlp.down_proj.weight[3, 7] = mlp.down_proj.weight.abs().max() * 1000
    lm, _ = apply_steps(lm, [Step(method="onnx.export")])
    return lm


DOWN = ["/model/layers.0/mlp/down_proj/MatMul", "/model/layers.1/mlp/down_proj/MatMul"]


@pytest.mark.parametrize("method, max_excluded", [("ort.dynamic_int8", 0.25), ("ort.static_int8", 0.07)])
def test_ort_auto_exclude_keeps_the_sensitive_nodes(fragile, text_file, method, max_excluded):
    from optkit.common.auto_exclude import exclude_patterns

    calibration = {"samples": 2, "seq_len": 64, "path": str(text_file)}
    params = {"calibration": {**calibration, "samples": 4}} if method == "ort.static_int8" else {}
    step = Step(method=method, params=params,
                auto_exclude={"max_ppl_increase": "2%", "max_excluded": max_excluded, "calibration": calibration})
    lm, (record,) = apply_steps(fragile, [step])
    fallback = record.details["auto_exclude"]
    assert fallback["ppl_increase_without_fallback"] > 0.1  # the planted nodes ruin the fully quantized model
    assert [m["module"] for m in fallback["most_sensitive"][:2]] == DOWN  # ranked first, measured alone
    kept = {s.module: s.reason for s in record.modules_skipped}
    if max_excluded == 0.25:  # room to keep both: the budget holds
        assert fallback["kept"] == DOWN and fallback["ppl_increase_with_fallback"] <= 0.02 and not record.notes
    else:  # one node allowed (1 of 15): the budget cannot be met, and the step says so
        assert fallback["kept"] == DOWN[:1] and fallback["ppl_increase_with_fallback"] > 0.02
        assert len(record.notes) == 1 and "over the 2% budget" in record.notes[0]
    for rank, node in enumerate(fallback["kept"], 1):
        assert kept[node].startswith(f"kept in higher precision by auto_exclude (rank {rank}, KL ")
        assert node not in record.modules_changed
    assert len(record.modules_changed) == 15 - len(fallback["kept"])
    assert fallback["quantize_runs"] < 15  # groups + one layer group, not one run per node
    # the artifact replays the decision as exclude patterns that select exactly these nodes
    assert all(__import__("re").search(p, n) for p, n in zip(exclude_patterns(fallback["kept"]), fallback["kept"]))
    assert len(token_nlls(lm, TOKENS, 64, 32)) == len(TOKENS) - 1
    if method == "ort.dynamic_int8":  # a budget the fully quantized model meets: one run, nothing ranked or kept
        step.auto_exclude.max_ppl_increase = 1e6
        _, (record,) = apply_steps(fragile, [step])
        assert record.details["auto_exclude"]["quantize_runs"] == 1 and record.details["auto_exclude"]["kept"] == []
        assert len(record.modules_changed) == 15 and not record.notes
