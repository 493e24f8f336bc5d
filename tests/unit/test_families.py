"""Five families transformers ships (Llama, Gemma 3, Qwen 3, Phi-3, Mistral), as tiny random models built from
configs, each with a tokenizer that follows its family's special-token rule: optkit loads them, its token
perplexity equals a plain transformers computation under that rule, every CPU method applies or is refused in
preflight with one line, the lm-eval adapter scores a task, and the ONNX export validates."""

import math

import pytest
import torch

from optkit import checkpoints, loading
from optkit.errors import BadInput
from tests.conftest import DATA, FAMILIES, build_family_model

METHODS = {
    "bf16": [("cast", {"dtype": "bfloat16"})],
    "int8wo": [("torchao.int8_weight_only", {})],
    "int8dyn": [("torchao.int8_dynamic", {})],
    "int4": [("cast", {"dtype": "bfloat16"}), ("torchao.int4_weight_only", {"group_size": 32})],
    "int4-g128": [("cast", {"dtype": "bfloat16"}), ("torchao.int4_weight_only", {"group_size": 128})],
    "dynamic-int8": [("torch.dynamic_int8", {})],
    "bnb-int8": [("bnb.int8", {})],
    "bnb-nf4": [("bnb.4bit", {"blocksize": 32})],
    "magnitude": [("prune.magnitude", {"sparsity": 0.5})],
    "2to4": [("prune.2to4", {})],
    "wanda": [("prune.wanda", {"sparsity": 0.5, "calibration": {"samples": 2, "seq_len": 32}})],
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    folder = build_family_model(request.param, tmp_path_factory.mktemp(request.param) / "model")
    return request.param, folder


def test_token_perplexity_follows_the_family_rule(family, text_file):
    from optkit.evaluators.perplexity import evaluate, token_nlls
    from optkit.recipe import PerplexitySpec

    name, folder = family
    lm = loading.load(checkpoints.resolve(str(folder)))
    assert bool(lm.prefix) == (FAMILIES[name][2] is not None)
    [res] = evaluate(lm, PerplexitySpec(path=str(text_file), max_tokens=200, window=512, stride=256))
    # plain transformers: the tokenizer's own encoding (its BOS rule included), the model's own loss
    ids = lm.tokenizer(text_file.read_text())["input_ids"][:len(lm.prefix) + 200]
    with torch.inference_mode():
        loss = lm.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    assert res.value == pytest.approx(math.exp(loss), rel=1e-4)
    assert res.n == len(ids) - 1  # every text token after a BOS is scored; the BOS itself never is
    assert res.details["special_tokens"] == lm.special_tokens_rule()
    tokens = lm.encode(text_file.read_text())[:150]
    for window, stride in ((48, 16), (40, 40)):  # windows that start mid-text get the BOS too
        assert len(token_nlls(lm, tokens, window, stride, lm.prefix)) == len(tokens) - (0 if lm.prefix else 1)


@pytest.mark.parametrize("variant", sorted(METHODS))
def test_each_cpu_method_applies_or_is_refused_in_preflight(family, variant, text_file):
    from optkit import pipeline
    from optkit.engines.method import apply_steps
    from optkit.recipe import Step, parse_recipe

    name, folder = family
    steps = [{"method": m, "params": {**p, **({"calibration": {**p["calibration"], "path": str(text_file)}}
                                             if "calibration" in p else {})}} for m, p in METHODS[variant]]
    recipe = parse_recipe({"name": "f", "model": {"checkpoint": str(folder)}, "eval": {"perplexity": None},
                           "variants": [{"name": variant, "steps": steps}]})
    try:
        pipeline.plan(recipe, "f.yaml")
    except BadInput as exc:
        assert "\n" not in str(exc) and f"variants[0] ({variant})" in str(exc)
        assert variant == "int4-g128", f"{name}: {variant} refused: {exc}"  # 128 divides no 64-wide layer
        return
    assert variant != "int4-g128", f"{name}: group 128 on 64-wide layers should be refused"
    lm = loading.load(checkpoints.resolve(str(folder)))
    prompt = torch.tensor([[1, 17, 42, 99, 7, 3, 250, 11]])
    before = lm.logits(prompt)[0]
    lm, records = apply_steps(lm, [Step(**s) for s in steps])
    after = lm.logits(prompt)[0]
    assert all(r.modules_changed for r in records)
    assert torch.isfinite(after).all() and not torch.equal(after, before)


def test_lm_eval_adapter_scores_a_task(family, monkeypatch):
    from optkit.evaluators.lm_eval import evaluate
    from optkit.recipe import TaskSpec

    monkeypatch.setenv("OPTKIT_DATA", str(DATA))
    lm = loading.load(checkpoints.resolve(str(family[1])))
    acc = {r.metric: r for r in evaluate(lm, TaskSpec(name="arc_easy", limit=4, batch_size=4))}
    assert acc["acc"].n == 4 and 0 <= acc["acc"].value <= 1 and len(acc["acc"].details["samples"]) == 4


def test_onnx_export_validates_against_pytorch(family, text_file):
    from optkit.engines.method import apply_steps
    from optkit.evaluators.perplexity import token_nlls
    from optkit.recipe import Step

    lm = loading.load(checkpoints.resolve(str(family[1])))
    tokens = lm.encode(text_file.read_text())[:100]
    expected = token_nlls(lm, tokens, 64, 32, lm.prefix)
    ort_lm, [record] = apply_steps(lm, [Step(method="onnx.export")])
    check = record.details["validation"]
    assert check["top1_agreement"] == 1.0 and check["cache_max_abs_diff"] < 1e-3
    got = token_nlls(ort_lm, tokens, 64, 32, ort_lm.prefix)
    assert max(abs(a - b) for a, b in zip(got, expected)) < 1e-3
