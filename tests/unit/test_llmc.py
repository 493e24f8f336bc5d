"""llm-compressor methods (llmc.*) on tiny models of several families: each writes a compressed-tensors folder
that plain transformers reloads with the same logits, weights land on the scheme's grid, include/exclude become
llm-compressor's `ignore`, bad input is refused in preflight (one line, exit 2), and the report flags the timing
of a compressed-tensors variant instead of ranking it on speed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("llmcompressor")

from optkit import checkpoints, loading  # noqa: E402
from optkit.errors import BadInput  # noqa: E402
from tests.conftest import build_family_model, optkit_cli  # noqa: E402

CAL = {"samples": 2, "seq_len": 32}
STEPS = {
    "rtn-w4g32": ("llmc.rtn", {"group_size": 32}),
    "gptq-w4g32-asym-actorder": ("llmc.gptq", {"group_size": 32, "symmetric": False, "actorder": "weight",
                                                "dampening_frac": 0.05}),
    "awq-w4g32": ("llmc.awq", {"group_size": 32}),
    "smoothquant-w8a8": ("llmc.smoothquant", {"smoothing_strength": 0.5}),
    "gptq-w8a16-channel": ("llmc.gptq", {"scheme": "W8A16", "group_size": None}),
}


@pytest.fixture(scope="module", params=["llama", "qwen3", "gemma3"])
def family(request, tmp_path_factory):
    return request.param, build_family_model(request.param, tmp_path_factory.mktemp(request.param) / "model")


def _apply(folder, method, params, text_file):
    from optkit.engines.method import apply_steps
    from optkit.recipe import Step

    if method != "llmc.rtn":
        params = {**params, "calibration": {**CAL, "path": str(text_file)}}
    lm = loading.load(checkpoints.resolve(str(folder)))
    prompt = torch.tensor([[1, 17, 42, 99, 7, 3, 250, 11]])
    before = lm.logits(prompt)[0]
    lm, [record] = apply_steps(lm, [Step(method=method, params=params)])
    return lm, record, before, lm.logits(prompt)[0]


@pytest.mark.parametrize("variant", sorted(STEPS))
def test_each_method_writes_a_folder_transformers_reloads(family, variant, text_file):
    name, folder = family
    method, params = STEPS[variant]
    lm, record, before, after = _apply(folder, method, params, text_file)
    assert lm.format == "compressed-tensors" and lm.engine == "torch"
    assert torch.isfinite(after).all() and not torch.equal(after, before)
    check = record.details["reload_check"]
    assert check["max_abs_diff"] <= check["allowed_abs_diff"] and check["top1_agreement"] == 1.0
    # lm_head is excluded by default and named as skipped; every other linear is quantized
    assert "lm_head" not in record.modules_changed and record.details["ignore"] == ["lm_head"]
    assert any(s.module == "lm_head" for s in record.modules_skipped)
    linears = [n for n, m in lm.model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    assert sorted(record.modules_changed) == sorted(linears)
    config = json.loads((lm.source_folder / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors"
    if method == "llmc.gptq":  # act-order as asked, else llm-compressor's own default (static)
        weights = config["config_groups"]["group_0"]["weights"]
        assert weights["actorder"] == params.get("actorder", "static"), weights
    # the folder as a checkpoint, without optkit's manifest, is known for what it is
    assert checkpoints.resolve(str(lm.source_folder)).format == "compressed-tensors"
    # its timing in PyTorch is not vLLM's: the report says so per format and engine (not in vLLM itself)
    from optkit.report.analysis import speed_caveat
    assert "vLLM" in speed_caveat(lm.format, lm.engine) and speed_caveat(lm.format, "vllm") is None
    # its size is the packed folder's, not the decompressed copy transformers holds in memory on CPU
    packed = sum(f.stat().st_size for f in lm.source_folder.glob("*.safetensors"))
    assert lm.size_bytes() == packed == record.details["size_bytes"]
    in_memory = sum(t.numel() * t.element_size() for t in lm.model.state_dict().values())
    assert packed < 0.6 * in_memory


def test_int4_weights_sit_on_a_16_level_grid_per_group(tmp_path, text_file):
    """A plain check of what W4A16 g32 means: in every group of 32 weights of a row at most 16 distinct values,
    evenly spaced (symmetric: a multiple of the group's scale), and the error at most half a step."""
    src = build_family_model("llama", tmp_path / "m")
    reference = loading.load(checkpoints.resolve(str(src))).model.model.layers[0].mlp.down_proj.weight.detach()
    lm, *_ = _apply(src, "llmc.rtn", {"group_size": 32}, text_file)
    mod = lm.model.model.layers[0].mlp.down_proj
    w = mod.weight.detach().float().reshape(mod.out_features, -1, 32)
    scale = mod.weight_scale.detach().float().reshape(mod.out_features, -1, 1)
    q = w / scale
    assert torch.allclose(q, q.round(), atol=1e-3) and q.round().abs().max() <= 8
    assert max(len(torch.unique(g)) for g in w.reshape(-1, 32)) <= 16
    err = (w - reference.reshape(w.shape)).abs()
    assert (err <= scale / 2 + 1e-6).all()


def test_include_exclude_become_ignore(tmp_path, text_file):
    src = build_family_model("mistral", tmp_path / "m")
    lm, record, *_ = _apply(src, "llmc.rtn", {"group_size": 32, "exclude": ["lm_head", "down_proj"]}, text_file)
    assert not any("down_proj" in n for n in record.modules_changed)
    assert sum("down_proj" in n for n in record.details["ignore"]) == 2
    assert not hasattr(lm.model.model.layers[0].mlp.down_proj, "weight_scale")
    assert hasattr(lm.model.model.layers[0].mlp.up_proj, "weight_scale")


def test_artifact_reloads_in_a_fresh_process_with_plain_transformers(tmp_path, tiny_model, text_file):
    out = tmp_path / "gptq"
    res = optkit_cli("quantize", str(tiny_model), "llmc.gptq", "-p", "group_size=32", "-p",
                     f"calibration={json.dumps({**CAL, 'path': str(text_file)})}", "-o", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "format compressed-tensors" in res.stdout
    ids = [[1, 17, 42, 99, 7, 3, 250, 11]]
    code = ("import sys, json, torch; from transformers import AutoModelForCausalLM as M; "
            "m = M.from_pretrained(sys.argv[1]).eval(); "
            "print(json.dumps(m(torch.tensor(json.loads(sys.argv[2]))).logits.tolist()))")
    plain = subprocess.run([sys.executable, "-c", code, str(out), json.dumps(ids)], capture_output=True, text=True,
                           timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    lm = loading.load(checkpoints.resolve(str(out)))  # optkit opens the artifact the same way
    assert lm.format == "compressed-tensors"
    got = torch.tensor(json.loads(plain.stdout.splitlines()[-1]))
    assert torch.allclose(got, lm.logits(torch.tensor(ids))[0], atol=1e-5)


def _plan(tmp_path, folder, steps, device="cpu"):
    from optkit import pipeline
    from optkit.recipe import parse_recipe

    recipe = parse_recipe({"name": "l", "model": {"checkpoint": str(folder)}, "device": device,
                           "eval": {"perplexity": None}, "variants": [{"name": "v", "steps": steps}]})
    return pipeline.plan(recipe, "l.yaml")


def test_group_size_that_does_not_divide_a_layer_is_refused_naming_the_fits(tmp_path, tiny_model):
    with pytest.raises(BadInput) as err:
        _plan(tmp_path, tiny_model, [{"method": "llmc.gptq", "params": {"group_size": 128}}])
    msg = str(err.value)
    assert "\n" not in msg and "group_size 128 does not divide in_features [64]" in msg
    assert "model.layers.0.self_attn.q_proj" in msg and "use group_size 32 or 64" in msg


@pytest.mark.parametrize("steps, needle", [
    ([{"method": "llmc.gptq", "params": {"group_size": 48}}], "use group_size 32 or 64"),
    ([{"method": "torchao.int8_weight_only"}, {"method": "llmc.rtn", "params": {"group_size": 32}}],
     "already quantized"),
    ([{"method": "llmc.rtn", "params": {"scheme": "FP8_DYNAMIC", "group_size": None}}], "CPU-only"),
])
def test_bad_llmc_input_exits_2_with_one_line(tmp_path, tiny_model, text_file, steps, needle):
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "bad", "model": {"checkpoint": str(tiny_model)},
                                      "eval": {"perplexity": {"path": str(text_file), "max_tokens": 64, "window": 32,
                                                              "stride": 16}},
                                      "bench": None, "variants": [{"name": "v", "steps": steps}]}))
    res = optkit_cli("run", str(recipe), "--out", str(tmp_path / "run"))
    assert res.returncode == 2, res.stderr[-2000:]
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("optkit: error")]
    assert needle in line, line
    assert not (tmp_path / "run" / "variants").exists()


def test_report_flags_compressed_tensors_timing_and_does_not_rank_it():
    from optkit.report.analysis import frontier, rows
    from optkit.report.summary import text_table
    from optkit.report.wording import recommend
    from tests.unit.test_gate import cand, make_report

    fast_ct = cand("gptq", 20.4, 80.0)
    fast_ct.format = "compressed-tensors"
    slower = cand("int8", 20.5, 30.0)
    report = make_report(fast_ct, slower)
    headline, rejected = recommend(report)
    assert headline.startswith("Ship int8") and "not ranked on speed" in headline and "gptq" in headline
    assert any(r.startswith("gptq: not ranked on speed (perplexity +2.0%") and "vLLM" in r for r in rejected)
    assert "gptq" not in frontier(rows(report))
    table = text_table(report)
    assert "not its serving speed" in table and "vLLM" in table
    only = make_report(fast_ct)
    assert recommend(only)[0].startswith("Keep the baseline (base)")
