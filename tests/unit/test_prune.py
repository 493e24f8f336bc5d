"""Pruning on the tiny random Llama: each method hits the requested sparsity (per layer, per row or per group of 4),
records it, leaves lm_head alone unless asked (never when tied), and refuses bad params before any work."""

import pytest
import torch

from optkit import registry
from optkit.engines.method import ModelInfo
from optkit.engines.torch.prune import score_wanda
from optkit.engines.torch.transform import linear_names, run_step

PROMPT = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])


@pytest.fixture()
def calib(text_file):
    return {"path": str(text_file), "samples": 4, "seq_len": 32}


def apply(lm, name, **params):
    method = registry.get(name)
    return run_step(method, lm, method.Params.model_validate(params))


def weight(lm, name):
    return lm.model.get_submodule(name).weight


def zero_share(w):
    return (w == 0).float().mean().item()


def assert_two_four(w):
    zeros = (w.reshape(w.shape[0], -1, 4) == 0).sum(-1)
    assert torch.all(zeros == 2), "every group of 4 inputs must have exactly 2 zeros"


def assert_usable(lm):
    assert torch.isfinite(lm.logits(PROMPT)[0]).all()


@pytest.mark.parametrize("sparsity", [0.5, 0.3])
def test_magnitude_per_layer_hits_sparsity_and_records_it(tiny_lm, sparsity):
    record = apply(tiny_lm, "prune.magnitude", sparsity=sparsity)
    body = [n for n in linear_names(tiny_lm.model) if n != "lm_head"]
    assert sorted(record.modules_changed) == sorted(body)
    for name in body:
        w = weight(tiny_lm, name)
        assert int((w == 0).sum()) == round(sparsity * w.numel())
        assert record.details["sparsity"][name] == pytest.approx(sparsity, abs=1e-3)
    assert record.details["overall_sparsity"] == pytest.approx(sparsity, abs=1e-3)
    assert any("no speed-up" in note for note in record.notes)
    assert_usable(tiny_lm)


def test_magnitude_global_varies_per_layer_but_hits_overall(tiny_lm):
    with torch.no_grad():  # a layer with 10x larger weights should keep most of them under one global threshold
        weight(tiny_lm, "model.layers.0.mlp.down_proj").mul_(10)
    record = apply(tiny_lm, "prune.magnitude", sparsity=0.5, scope="global")
    per_layer = record.details["sparsity"]
    assert per_layer["model.layers.0.mlp.down_proj"] < 0.1
    assert min(v for n, v in per_layer.items() if n != "model.layers.0.mlp.down_proj") > 0.5
    total = sum(weight(tiny_lm, n).numel() for n in per_layer)
    zeros = sum(int((weight(tiny_lm, n) == 0).sum()) for n in per_layer)
    assert zeros == round(0.5 * total)


def test_two_four_keeps_the_two_largest_of_every_four(tiny_lm):
    dense = weight(tiny_lm, "model.layers.0.self_attn.q_proj").detach().clone()
    record = apply(tiny_lm, "prune.2to4")
    for name in record.modules_changed:
        assert_two_four(weight(tiny_lm, name))
    groups = dense.abs().reshape(dense.shape[0], -1, 4)
    kept = weight(tiny_lm, "model.layers.0.self_attn.q_proj").reshape(dense.shape[0], -1, 4) != 0
    assert torch.equal(kept, groups >= groups.sort(-1).values[..., 2:3])
    assert record.details["overall_sparsity"] == 0.5


def test_bfloat16_stays_bfloat16(tiny_lm):
    apply(tiny_lm, "cast", dtype="bfloat16")
    record = apply(tiny_lm, "prune.magnitude", sparsity=0.5, scope="global")
    assert tiny_lm.dtype == "bfloat16"
    assert record.details["overall_sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert_usable(tiny_lm)


def test_wanda_unstructured_prunes_each_output_row(tiny_lm, calib):
    record = apply(tiny_lm, "prune.wanda", sparsity=0.5, calibration=calib)
    assert len(record.modules_changed) == len(linear_names(tiny_lm.model)) - 1
    for name in record.modules_changed:
        w = weight(tiny_lm, name)
        assert torch.all((w == 0).sum(1) == round(0.5 * w.shape[1])), name
    assert record.details["overall_sparsity"] == 0.5 and record.details["calibration_tokens"] == 4 * 32
    assert_usable(tiny_lm)


def test_wanda_two_four(tiny_lm, calib):
    record = apply(tiny_lm, "prune.wanda", pattern="2:4", calibration=calib)
    for name in record.modules_changed:
        assert_two_four(weight(tiny_lm, name))


def test_block_walk_sees_the_same_activations_as_a_full_pass(tiny_lm, calib):
    from optkit.calibration import CalibrationSpec, calibration_batch
    from optkit.engines.torch.prune import _blocks, _full_pass_norms, _walk_blocks

    names = [n for n in linear_names(tiny_lm.model) if n != "lm_head"]
    chunks = calibration_batch(tiny_lm, CalibrationSpec(**calib)).split(2)
    layers, by_block, rest = _blocks(tiny_lm.model, names)
    assert sorted(by_block) == [0, 1] and rest == []
    seen = {}
    _walk_blocks(tiny_lm, chunks, layers, by_block, lambda group, norms: seen.update(norms))  # records, prunes nothing
    full = _full_pass_norms(tiny_lm, chunks, names)
    assert seen.keys() == full.keys()
    assert all(torch.allclose(seen[n], full[n], rtol=1e-4) for n in names)


def test_wanda_score_weighs_weights_by_input_norm():
    w = torch.tensor([[1.0, 0.5], [-0.2, 0.1]])
    score = score_wanda(w, torch.tensor([0.1, 10.0]))
    assert torch.allclose(score, torch.tensor([[0.1, 5.0], [0.02, 1.0]]))
    assert score[0].argmin() == 0 and w[0].abs().argmin() == 1  # Wanda drops the big weight on the quiet input


def test_wanda_keeps_weights_on_loud_inputs_that_magnitude_drops(tiny_model, calib):
    from optkit import checkpoints, loading

    def loud(feature=7):  # input feature 7 of down_proj comes from up_proj row 7: make it 100x louder
        lm = loading.load(checkpoints.resolve(str(tiny_model)))
        with torch.no_grad():
            weight(lm, "model.layers.0.mlp.up_proj")[feature].mul_(100)
        return lm

    target = "model.layers.0.mlp.down_proj"
    wanda, magnitude = loud(), loud()
    apply(wanda, "prune.wanda", sparsity=0.5, calibration=calib, include=[target])
    apply(magnitude, "prune.magnitude", sparsity=0.5, include=[target])
    assert int((weight(wanda, target)[:, 7] == 0).sum()) <= 2
    assert int((weight(magnitude, target)[:, 7] == 0).sum()) >= 16
    assert not torch.equal(weight(wanda, target) == 0, weight(magnitude, target) == 0)


def test_lm_head_only_when_included_and_never_when_tied(tiny_lm):
    record = apply(tiny_lm, "prune.magnitude", sparsity=0.5)
    reasons = {s.module: s.reason for s in record.modules_skipped}
    assert "not pruned by default" in reasons["lm_head"]
    record = apply(tiny_lm, "prune.magnitude", sparsity=0.5, include=["lm_head"])
    assert record.modules_changed == ["lm_head"] and zero_share(weight(tiny_lm, "lm_head")) == 0.5

    tiny_lm.model.lm_head.weight = tiny_lm.model.model.embed_tokens.weight  # tie, as SmolLM2 does
    embed = tiny_lm.model.model.embed_tokens.weight.detach().clone()
    record = apply(tiny_lm, "prune.magnitude", sparsity=0.7, include=["lm_head", "q_proj"])
    reasons = {s.module: s.reason for s in record.modules_skipped}
    assert "shares its weight with the input embedding" in reasons["lm_head"]
    assert torch.equal(tiny_lm.model.model.embed_tokens.weight, embed)
    assert "lm_head" not in record.modules_changed and "model.layers.0.self_attn.q_proj" in record.modules_changed


def test_wanda_calibrates_lm_head_outside_the_blocks(tiny_lm, calib):
    record = apply(tiny_lm, "prune.wanda", sparsity=0.25, calibration=calib, include=["lm_head", r"layers\.1\.mlp"])
    assert sorted(record.modules_changed) == ["lm_head"] + [f"model.layers.1.mlp.{p}_proj" for p in
                                                            ("down", "gate", "up")]
    assert torch.all((weight(tiny_lm, "lm_head") == 0).sum(1) == 16)


def test_bad_params_are_refused(calib):
    mag = registry.get("prune.magnitude")
    for bad in ({"sparsity": 0}, {"sparsity": 1.2}, {}, {"sparsity": 0.5, "scope": "row"}):
        with pytest.raises(ValueError):
            mag.Params.model_validate(bad)
    wanda = registry.get("prune.wanda")
    for bad in ({"pattern": "unstructured"}, {"pattern": "2:4", "sparsity": 0.6}, {"sparsity": 0.5, "pattern": "1:4"}):
        with pytest.raises(ValueError):
            wanda.Params.model_validate({"calibration": calib, **bad})
    assert wanda.Params.model_validate({"pattern": "2:4"}).calibration.samples == 16


def test_preflight_checks(calib, tmp_path):
    info = ModelInfo(linears={"m.layers.0.q_proj": (8, 8), "m.layers.0.odd": (8, 6), "lm_head": (10, 6)},
                     dtype="float32", device="cpu")
    two = registry.get("prune.2to4")
    problems = two.check(info, two.Params())
    assert len(problems) == 1 and "m.layers.0.odd has in_features [6]" in problems[0] and "exclude" in problems[0]
    assert "lm_head" not in problems[0], "lm_head is skipped by default, so its shape does not matter"
    assert two.check(info, two.Params(exclude=["odd"])) == []
    assert "lm_head" in two.check(info, two.Params(include=["lm_head"]))[0]

    wanda = registry.get("prune.wanda")
    assert wanda.check(info, wanda.Params(sparsity=0.5, calibration=calib)) == []
    assert "odd" in wanda.check(info, wanda.Params(pattern="2:4", calibration=calib))[0]
    missing = wanda.Params(sparsity=0.5, calibration={"path": str(tmp_path / "nope.txt")})
    assert "calibration text not found" in wanda.check(info, missing)[0]

    info.format = "torchao"
    for name, params in (("prune.magnitude", {"sparsity": 0.5}), ("prune.2to4", {})):
        method = registry.get(name)
        assert "already quantized" in method.check(info, method.Params(**params))[0]
