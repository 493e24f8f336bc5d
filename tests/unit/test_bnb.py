"""bitsandbytes methods on the tiny random Llama (CPU): they swap exactly the targeted Linears for bnb modules,
keep the logits close, leave a tied embedding intact, and refuse bad params and shapes bnb cannot run."""

import pytest
import torch

pytest.importorskip("bitsandbytes")

from optkit import registry  # noqa: E402
from optkit.engines.method import ModelInfo  # noqa: E402
from optkit.engines.torch import bnb as bnb_methods  # noqa: E402
from optkit.engines.torch.transform import linear_names, run_step  # noqa: E402

PROMPT = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
CASES = [
    ("bnb.int8", {}, "Linear8bitLt"),
    ("bnb.int8", {"threshold": 0.0}, "Linear8bitLt"),
    ("bnb.4bit", {}, "Linear4bit"),
    ("bnb.4bit", {"quant_type": "fp4", "double_quant": False, "compute_dtype": "float32", "blocksize": 32},
     "Linear4bit"),
]


def apply(lm, name, **params):
    method = registry.get(name)
    return run_step(method, lm, method.Params.model_validate(params))


def logits(lm):
    return lm.logits(PROMPT)[0]


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)


@pytest.mark.parametrize("name, params, cls", CASES)
def test_swaps_every_linear_and_stays_close(tiny_lm, name, params, cls):
    reference = logits(tiny_lm)
    linears = linear_names(tiny_lm.model)
    record = apply(tiny_lm, name, **params)
    assert sorted(record.modules_changed) == sorted(linears)
    assert record.modules_skipped == []
    modules = dict(tiny_lm.model.named_modules())
    assert all(type(modules[n]).__name__ == cls and not modules[n].training for n in linears)
    after = logits(tiny_lm)
    assert not torch.equal(after, reference), "quantization should change the logits a little"
    assert cosine(after, reference) > 0.95
    assert tiny_lm.size_bytes() > 0  # the quantized state dict serializes


@pytest.mark.parametrize("name", ["bnb.int8", "bnb.4bit"])
def test_exclude_patterns_are_recorded_as_skipped(tiny_lm, name):
    record = apply(tiny_lm, name, exclude=["down_proj", "lm_head"])
    skipped = {s.module: s.reason for s in record.modules_skipped}
    assert set(skipped) == {"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj", "lm_head"}
    assert all("excluded by pattern" in r for r in skipped.values())
    assert len(record.modules_changed) == len(linear_names(tiny_lm.model)) - 3
    assert type(tiny_lm.model.lm_head) is torch.nn.Linear


@pytest.mark.parametrize("name", ["bnb.int8", "bnb.4bit"])
def test_tied_lm_head_leaves_the_embedding_float(tiny_lm, name):
    model = tiny_lm.model
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    embedding = model.model.embed_tokens.weight.detach().clone()
    reference = logits(tiny_lm)
    record = apply(tiny_lm, name)
    assert "lm_head" in record.modules_changed and "model.embed_tokens" not in record.modules_changed
    assert record.details["untied"] == {"lm_head": ["model.embed_tokens"]}
    assert torch.equal(model.model.embed_tokens.weight, embedding)
    assert model.config.tie_word_embeddings is False
    model.tie_weights()  # must not put the float weight back into the quantized lm_head
    assert model.lm_head.weight.dtype in (torch.int8, torch.uint8)
    assert cosine(logits(tiny_lm), reference) > 0.95


def test_bad_params_are_refused():
    int8, four = registry.get("bnb.int8"), registry.get("bnb.4bit")
    for method, params in [(int8, {"threshold": -1}), (int8, {"blocksize": 64}), (four, {"quant_type": "int4"}),
                           (four, {"blocksize": 48}), (four, {"compute_dtype": "float8"}),
                           (four, {"exclude": ["(unclosed"]})]:
        with pytest.raises(ValueError):
            method.Params.model_validate(params)


def test_preflight_checks(monkeypatch):
    smol = {"a.q_proj": (576, 576), "a.down_proj": (576, 1536), "lm_head": (49152, 576)}
    four, int8 = registry.get("bnb.4bit"), registry.get("bnb.int8")
    monkeypatch.setattr(bnb_methods, "_cpu_packed_kernel", lambda: True)
    for dtype in ("float32", "bfloat16", "float16"):  # bnb takes all three float dtypes
        info = ModelInfo(linears=smol, dtype=dtype, device="cpu")
        assert four.check(info, four.Params()) == [] and int8.check(info, int8.Params()) == []
    problem = four.check(info, four.Params(blocksize=128))[0]
    assert "in_features % blocksize (128)" in problem and "a.q_proj, lm_head" in problem
    assert problem.endswith("exclude them or use blocksize 64")
    odd = ModelInfo(linears={"a.proj": (100, 64), "b.proj": (64, 64)}, dtype="float32", device="cpu")
    problem = four.check(odd, four.Params())[0]
    assert "out_features % 32" in problem and "a.proj do not fit" in problem and problem.endswith("exclude them")
    assert four.check(odd, four.Params(exclude=["^a\\."])) == []
    assert four.check(ModelInfo(linears=odd.linears, dtype="float32", device="cuda"), four.Params()) == []
    monkeypatch.setattr(bnb_methods, "_cpu_packed_kernel", lambda: False)
    assert four.check(odd, four.Params()) == []
    info.format = "torchao"
    assert "already quantized" in int8.check(info, int8.Params())[0]
    assert "already quantized" in four.check(info, four.Params())[0]
    assert int8.devices == four.devices == ("cpu", "cuda")


def test_cpu_shape_limit_is_real():
    """The shapes check() refuses on an AVX512-BF16 CPU do crash in bnb's forward (guards the check)."""
    if not bnb_methods._cpu_packed_kernel():
        pytest.skip("this CPU lacks AVX512-BF16: bnb uses its generic 4-bit path")
    linear = torch.nn.Sequential(torch.nn.Linear(64, 100)).eval()
    shim = type("LM", (), {"model": linear, "device": "cpu"})()
    registry.get("bnb.4bit").transform(shim, bnb_methods.FourBitParams(), ["0"])
    with pytest.raises((AssertionError, RuntimeError)), torch.inference_mode():
        linear(torch.randn(1, 64))
