"""Each method on a tiny random Llama: it applies, changes exactly the expected modules, keeps the model
usable, and refuses bad params or impossible combinations before any heavy work."""

import pytest
import torch

from optkit import registry
from optkit.engines.method import ModelInfo
from optkit.engines.torch.transform import linear_names, run_step
from optkit.errors import BadInput, RunError

PROMPT = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])


def apply(lm, name, **params):
    method = registry.get(name)
    return run_step(method, lm, method.Params.model_validate(params))


def logits(lm):
    return lm.logits(PROMPT)[0]


@pytest.mark.parametrize("name, params, pre", [
    ("torchao.int8_weight_only", {}, None),
    ("torchao.int8_dynamic", {}, None),
    ("torchao.int4_weight_only", {"group_size": 32}, "bfloat16"),
    ("torch.dynamic_int8", {}, None),
])
def test_quantizer_changes_every_linear_and_stays_close(tiny_lm, name, params, pre):
    if pre:
        apply(tiny_lm, "cast", dtype=pre)
    reference = logits(tiny_lm)
    linears = linear_names(tiny_lm.model)
    record = apply(tiny_lm, name, **params)
    assert sorted(record.modules_changed) == sorted(linears)
    assert record.modules_skipped == []
    after = logits(tiny_lm)
    assert not torch.equal(after, reference), "quantization should change the logits a little"
    cos = torch.nn.functional.cosine_similarity(after.flatten(), reference.flatten(), dim=0)
    assert cos > 0.95


def test_exclude_patterns_are_recorded_as_skipped(tiny_lm):
    record = apply(tiny_lm, "torchao.int8_weight_only", exclude=["down_proj", "lm_head"])
    skipped = {s.module: s.reason for s in record.modules_skipped}
    assert set(skipped) == {"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj", "lm_head"}
    assert all("excluded by pattern" in r for r in skipped.values())
    assert not any(n.endswith(("down_proj", "lm_head")) for n in record.modules_changed)
    assert len(record.modules_changed) == len(linear_names(tiny_lm.model)) - 3


def test_include_selects_only_matching(tiny_lm):
    record = apply(tiny_lm, "torch.dynamic_int8", include=[r"\.mlp\."])
    assert record.modules_changed and all(".mlp." in n for n in record.modules_changed)


def test_step_that_changes_nothing_is_an_error(tiny_lm):
    with pytest.raises(RunError, match="changed no modules"):
        apply(tiny_lm, "torchao.int8_weight_only", include=["no_such_layer"])


def test_cast_changes_dtype_of_all_weights(tiny_lm):
    record = apply(tiny_lm, "cast", dtype="bfloat16")
    assert tiny_lm.dtype == "bfloat16"
    assert "lm_head" in record.modules_changed and "model.embed_tokens" in record.modules_changed


def test_unknown_method_suggests_the_closest():
    with pytest.raises(BadInput, match="did you mean 'torchao.int8_weight_only'"):
        registry.get("torchao.int8_weight_onl")


def test_bad_params_are_refused():
    method = registry.get("torchao.int4_weight_only")
    with pytest.raises(ValueError):
        method.Params.model_validate({"group_size": 48})
    with pytest.raises(ValueError):
        method.Params.model_validate({"exclude": ["(unclosed"]})
    with pytest.raises(ValueError):
        registry.get("cast").Params.model_validate({"dtype": "int3"})


def test_preflight_checks():
    info = ModelInfo(linears={"a.q_proj": (576, 576), "a.down_proj": (576, 1536)}, dtype="bfloat16", device="cpu")
    int4 = registry.get("torchao.int4_weight_only")
    problems = int4.check(info, int4.Params(group_size=128))
    assert problems and "does not divide in_features [576]" in problems[0] and "use group_size 64 or 32" in problems[0]
    assert int4.check(info, int4.Params(group_size=32)) == []
    info.dtype = "float32"
    assert "add a step `method: cast" in int4.check(info, int4.Params(group_size=32))[0]
    dyn = registry.get("torch.dynamic_int8")
    info.dtype = "bfloat16"
    assert "needs a float32 model" in dyn.check(info, dyn.Params())[0]
    assert dyn.devices == ("cpu",)
    cast = registry.get("cast")
    assert "already bfloat16" in cast.check(info, cast.Params(dtype="bfloat16"))[0]


def test_preflight_lets_quantization_follow_pruning_but_not_another_quantization(tiny_model):
    from optkit import checkpoints
    from optkit.preflight import check_variant as _check_variant
    from optkit.preflight import model_info
    from optkit.recipe import parse_recipe

    steps = [{"method": "prune.magnitude", "params": {"sparsity": 0.5}}, {"method": "torchao.int8_weight_only"}]
    data = {"name": "t", "model": {"checkpoint": str(tiny_model)}, "variants": [{"name": "a", "steps": steps}]}
    recipe = parse_recipe(data)
    info = model_info(checkpoints.resolve(str(tiny_model)), "float32", "cpu", False)
    _check_variant(0, recipe, info, "cpu", "r.yaml")  # no error
    recipe.variants[0].steps.append(recipe.variants[0].steps[1])
    with pytest.raises(BadInput, match="already quantized"):
        _check_variant(0, recipe, info, "cpu", "r.yaml")


@pytest.mark.parametrize("steps", [
    [("cast", {"dtype": "bfloat16"})],
    [("torchao.int8_weight_only", {})],
    [("torchao.int8_dynamic", {})],
    [("cast", {"dtype": "bfloat16"}), ("torchao.int4_weight_only", {"group_size": 32})],
    [("torch.dynamic_int8", {"exclude": ["lm_head"]})],
    [("bnb.int8", {})],
    [("bnb.4bit", {"blocksize": 32, "exclude": ["lm_head"]})],
    [("prune.magnitude", {"sparsity": 0.5}), ("torchao.int8_weight_only", {})],
], ids=lambda s: "+".join(m for m, _ in s))
def test_artifact_reloads_with_identical_logits(tiny_model, tmp_path, steps):
    from optkit import artifacts, checkpoints, loading
    from optkit.engines.method import apply_steps
    from optkit.recipe import ModelSpec, Step

    ckpt = checkpoints.resolve(str(tiny_model))
    lm = loading.load(ckpt)
    recipe_steps = [Step(method=m, params=p) for m, p in steps]
    lm, records = apply_steps(lm, recipe_steps)
    artifacts.write(tmp_path / "art", lm, ckpt, ModelSpec(checkpoint=str(tiny_model)), recipe_steps, records)
    again = loading.load(checkpoints.resolve(str(tmp_path / "art")))
    assert torch.equal(logits(again), logits(lm))
    assert checkpoints.resolve(str(tmp_path / "art")).kind == "artifact"


def test_float8_is_refused_on_cpu_with_the_requirement(tmp_path, tiny_model):
    from optkit import checkpoints
    from optkit.preflight import check_variant as _check_variant
    from optkit.preflight import model_info
    from optkit.recipe import parse_recipe

    data = {"name": "t", "model": {"checkpoint": str(tiny_model)},
            "variants": [{"name": "f8", "steps": [{"method": "torchao.float8_dynamic"}]}]}
    info = model_info(checkpoints.resolve(str(tiny_model)), "float32", "cpu", False)
    with pytest.raises(BadInput, match=r"cannot run on cpu \(needs CUDA sm_89\+"):
        _check_variant(0, parse_recipe(data), info, "cpu", "r.yaml")


def test_a_fresh_worker_counts_a_dynamically_quantized_models_bytes(tiny_model):
    """In a process whose first import is the torch engine (as a worker's is), torch.save of a dynamically quantized
    model must not walk into transformers' alias modules (CI failed on "No module named 'torchvision'"); its size
    lies between its int8 weights' bytes and its float32 size."""
    import subprocess
    import sys

    code = f"""
import optkit.engines.torch.engine as engine
import torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained({str(tiny_model)!r})
fp32 = sum(p.numel() * 4 for p in model.parameters())
int8 = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
torch.ao.quantization.quantize_dynamic(model, {{torch.nn.Linear}}, dtype=torch.qint8, inplace=True)
print(int8, engine.TorchLM(model, None).size_bytes(), fp32)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    int8, size, fp32 = map(int, done.stdout.split()[-3:])
    assert int8 < size < fp32
