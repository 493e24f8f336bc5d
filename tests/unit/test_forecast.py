"""optkit plan: preflight first, then each variant's expected batch-1 decode speed-up from bytes moved."""

import re

import pytest

RECIPE = """\
schema_version: 1
name: forecast
model: {{checkpoint: {model}, dtype: float32}}
device: cpu
baseline: fp32
variants:
  - name: fp32
  - name: bf16
    steps: [{{method: cast, params: {{dtype: bfloat16}}}}]
  - name: int8
    steps: [{{method: torchao.int8_weight_only}}]
  - name: int4
    steps:
      - {{method: cast, params: {{dtype: bfloat16}}}}
      - {{method: torchao.int4_weight_only, params: {{group_size: 32}}}}
  - name: pruned
    steps: [{{method: prune.magnitude, params: {{sparsity: 0.5}}}}]
{extra}
bench: {{prompt_len: 16, gen_len: 4}}
"""


@pytest.fixture()
def plan_cli(tmp_path, tiny_model, monkeypatch):
    from click.testing import CliRunner

    from optkit.cli import main

    monkeypatch.setenv("OPTKIT_CACHE", str(tmp_path / "cache"))

    def run(extra: str = ""):
        path = tmp_path / "r.yaml"
        path.write_text(RECIPE.format(model=tiny_model, extra=extra))
        return CliRunner().invoke(main, ["plan", str(path)])

    return run


def test_plan_orders_int4_int8_bf16_above_the_baseline(plan_cli):
    result = plan_cli()
    assert result.exit_code == 0, result.output[-2000:]
    speedup = {m[1]: float(m[2]) for m in re.finditer(r"^(\S+).*?\s(\d+\.\d\d)x", result.output, re.M)}
    assert speedup["int4"] > speedup["int8"] > speedup["bf16"] > speedup["fp32"] == 1.0
    assert speedup["pruned"] == 1.0  # dense zeros still move on CPU
    assert "upper bound" in result.output and "compute-bound" in result.output
    assert "measured now" in result.output
    again = plan_cli()
    assert "cached" in again.output  # the device is measured once, then reused


def test_plan_runs_the_preflight_first(plan_cli):
    bad = "  - name: int4-fp32\n    steps: [{method: torchao.int4_weight_only}]"
    result = plan_cli(bad)
    assert result.exit_code == 2 and "needs a bfloat16 model" in result.output
    assert "speed-up" not in result.output


LINEARS = {"model.layers.0.mlp.up_proj": (256, 64), "lm_head": (1000, 64)}


def _expected(steps=(), engine=None, file_bytes_per_weight=None):
    """The forecast of one variant of a one-layer model (hidden 64) at context 0."""
    from types import SimpleNamespace

    from optkit.forecast import expected
    from optkit.recipe import Variant

    config = SimpleNamespace(num_hidden_layers=1, num_key_value_heads=1, num_attention_heads=1, hidden_size=64,
                             head_dim=64)
    return expected(Variant(name="v", steps=list(steps), engine=engine), LINEARS, "float32", config, 0, 10.0,
                    file_bytes_per_weight)


def bytes_of(steps):
    return _expected(steps).bytes_per_token


def test_bytes_per_token_follow_the_steps():
    from optkit.forecast import compute_bound_from

    params = 256 * 64 + 1000 * 64
    fp32 = bytes_of([])
    assert fp32 == params * 4 + 64 * 4  # weights + one embedding row, no KV at context 0
    assert bytes_of([{"method": "cast", "params": {"dtype": "bfloat16"}}]) == fp32 / 2
    kept = bytes_of([{"method": "torchao.int8_weight_only", "params": {"exclude": ["lm_head"]}}])
    assert kept == 256 * 64 * (1 + 4 / 64) + 1000 * 64 * 4 + 64 * 4  # the excluded lm_head stays fp32
    assert compute_bound_from(params, params * 4.0, 0.0, 8.0) == 17  # 2 FLOP per 4-byte weight x b > 8
    assert compute_bound_from(params, params * 4.0, 1e12, 8.0) is None  # a huge KV cache keeps it memory-bound


def test_gguf_variants_forecast_the_bytes_llama_cpp_moves():
    """gguf.export has no include/exclude: with an outtype the forecast applies it to every linear (`optkit plan
    recipes/llamacpp.yaml` once ended in an AttributeError here); a GGUF run as shipped keeps the file's types."""
    weights = 256 * 64 + 1000 * 64
    assert bytes_of([{"method": "gguf.export", "params": {"outtype": "f32"}}]) == weights * 4 + 64 * 4
    assert bytes_of([{"method": "gguf.export", "params": {"outtype": "f16"}}]) == weights * 2 + 64 * 4
    assert bytes_of([{"method": "gguf.export"}]) == weights * 4 + 64 * 4  # default: the model's dtype, unchanged
    assert bytes_of([{"method": "gguf.export", "params": {"outtype": "q8_0"}}]) == weights * 34 / 32 + 64 * 4
    from optkit.engines.llamacpp.methods import Export, ExportParams
    assert Export().bytes_per_weight(ExportParams(outtype="q8_0"), 100, 4) == 2  # rows of 100: the converter's F16
    as_file = _expected(engine="llamacpp", file_bytes_per_weight=0.75)
    assert as_file.bytes_per_token == weights * 0.75 + 64 * 4  # the file's own types, not the dtype torch loads
    assert "as it is" in as_file.notes[0]
    in_torch = _expected(file_bytes_per_weight=0.75)
    assert in_torch.bytes_per_token == weights * 4 + 64 * 4  # the same file dequantized into PyTorch


def test_gguf_quantize_prices_llama_cpps_fallback_for_rows_its_blocks_do_not_fit():
    """llama.cpp stores a tensor whose rows its type's 256-weight blocks do not divide in a 32-block type instead
    (SmolLM2's 576-wide rows: Q4_K_M is mostly Q5_0): the forecast once priced that file at Q4_K's 0.56 bytes per
    weight while most of it moves 0.69."""
    from optkit.engines.llamacpp.methods import Quantize, QuantizeParams

    q = Quantize()
    assert q.bytes_per_weight(QuantizeParams(type="Q4_K_M"), 1536, 4) == 144 / 256  # fits: Q4_K
    assert q.bytes_per_weight(QuantizeParams(type="Q4_K_M"), 576, 4) == 22 / 32  # Q5_0
    assert q.bytes_per_weight(QuantizeParams(type="Q6_K"), 576, 4) == 34 / 32  # Q8_0
    assert q.bytes_per_weight(QuantizeParams(type="IQ2_XS"), 576, 4) == 18 / 32  # IQ4_NL
    assert q.bytes_per_weight(QuantizeParams(type="Q4_0"), 100, 4) == 2  # fits no block: F16
    steps = [{"method": "gguf.export", "params": {"outtype": "f32"}}, {"method": "gguf.quantize",
                                                                      "params": {"type": "Q4_K_M"}}]
    assert bytes_of(steps) == (256 * 64 + 1000 * 64) * 22 / 32 + 64 * 4  # rows of 64: every linear is Q5_0
