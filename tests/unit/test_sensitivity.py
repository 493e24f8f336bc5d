"""auto_exclude on a tiny model with a planted activation outlier: the damaged layer is found, kept in higher
precision, and the calibration budget then holds; the decision is recorded and replays identically."""

import pytest
import torch

from optkit import registry
from optkit.common.auto_exclude import exclude_patterns
from optkit.engines.torch.transform import run_step
from optkit.recipe import AutoExcludeSpec, Step


@pytest.fixture()
def outlier_lm(tiny_lm, text_file):
    """The tiny model, briefly trained on the test corpus (so quantization damage shows in perplexity), then
    given one huge activation channel into the layer-1 MLP without changing its function: the norm weight
    is scaled up and the weights reading that channel scaled down, as in real LLMs' outlier features."""
    model = tiny_lm.model
    ids = torch.tensor([tiny_lm.encode(text_file.read_text())[:64 * 8]]).view(8, 64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(60):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    mlp, norm = model.model.layers[1].mlp, model.model.layers[1].post_attention_layernorm
    with torch.no_grad():
        norm.weight[7] *= 300.0
        mlp.gate_proj.weight[:, 7] /= 300.0
        mlp.up_proj.weight[:, 7] /= 300.0
    return tiny_lm


def spec(text_file, budget="2%", cost="none"):
    return AutoExcludeSpec(max_ppl_increase=budget, max_excluded=0.5, cost=cost,
                           calibration={"path": str(text_file), "samples": 4, "seq_len": 48})


def test_fallback_keeps_the_outlier_layer_and_meets_the_budget(outlier_lm, text_file):
    method = registry.get("torch.dynamic_int8")
    record = run_step(method, outlier_lm, method.Params(), spec(text_file))
    info = record.details["auto_exclude"]
    top = info["most_sensitive"][0]["module"]
    assert top in ("model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj")  # they read the outlier channel
    assert info["ppl_increase_without_fallback"] > 0.02  # the planted outlier really hurts
    assert info["ppl_increase_with_fallback"] <= 0.02
    assert top in info["kept"] and not set(info["kept"]) & set(record.modules_changed)
    kept = {s.module: s.reason for s in record.modules_skipped}
    assert all("kept in higher precision by auto_exclude" in kept[n] for n in info["kept"])
    assert len(record.modules_changed) == 15 - len(info["kept"])  # 2 layers x 7 linears + lm_head
    assert not record.notes or "budget" not in " ".join(record.notes)


def test_unreachable_budget_is_reported_not_hidden(outlier_lm, text_file):
    method = registry.get("torch.dynamic_int8")
    record = run_step(method, outlier_lm, method.Params(), spec(text_file, budget=-0.5))
    assert any("over the" in n and "budget" in n for n in record.notes)


def test_artifact_replays_the_decision_as_excludes(tmp_path, tiny_model, text_file):
    from optkit.artifacts import _replayable

    step = Step(method="torch.dynamic_int8", auto_exclude=spec(text_file))
    from optkit.results import StepRecord

    kept = ["model.layers.1.mlp.down_proj"]
    record = StepRecord(method=step.method, details={"auto_exclude": {"kept": kept}})
    replay = _replayable(step, record)
    assert replay.auto_exclude is None and replay.params["exclude"] == exclude_patterns(kept)


def test_cost_aware_ranking_keeps_cheap_sensitive_layers_first():
    from optkit.engines.torch.auto_exclude import rank

    kl = {"lm_head": 0.9, "v_proj": 0.3, "down_proj": 0.5, "up_proj": 0.05}
    saved = {"lm_head": 3.0, "v_proj": -0.01, "down_proj": 0.06, "up_proj": 0.07}  # ms/token
    assert rank(list(kl), kl, None) == ["lm_head", "down_proj", "v_proj", "up_proj"]
    # v_proj saves nothing (keeping it is free); lm_head carries the speed-up, so it is kept last
    assert rank(list(kl), kl, saved) == ["v_proj", "down_proj", "up_proj", "lm_head"]  # 0.3/~0, 8.3, 0.71, 0.3


def test_time_cost_is_measured_in_place_and_recorded(outlier_lm, text_file):
    method = registry.get("torch.dynamic_int8")
    record = run_step(method, outlier_lm, method.Params(), spec(text_file, cost="time"))
    info = record.details["auto_exclude"]
    assert info["cost"] == "time" and info["ppl_increase_with_fallback"] <= 0.02
    assert set(info["orders"]) == {"kl_per_ms_saved", "kl"} and info["order"] in info["orders"]
    both = [o for o in info["orders"].values() if o["meets_budget"]]
    assert len(both) < 2 or all(o["decode_tokens_per_s"] > 0 for o in both)  # ties are settled by measuring
    assert all("decode_ms_saved" in m for m in info["most_sensitive"])
    saved = {m["module"]: m["decode_ms_saved"] for m in info["most_sensitive"]}
    assert info["decode_ms_saved_with_fallback"] == pytest.approx(
        info["decode_ms_saved_all_quantized"] - sum(saved[n] for n in info["kept"]), abs=2e-3)
    kept = {s.module: s.reason for s in record.modules_skipped}
    assert all("ms/token" in kept[n] for n in info["kept"])
