"""The OpenVINO engine in its own environment, on tiny random models of two families (Llama, Qwen3), against
PyTorch computed here from the definition (logits -> log-softmax, argmax), and ov.compress (NNCF) through
`optkit run`. Skipped, saying so, where the OpenVINO environment is not built (`make setup-openvino`), except the
refusals, which preflight makes in optkit's environment.

Bounds: OpenVINO runs here with INFERENCE_PRECISION_HINT=f32 and an f32 KV cache (the engine's default), so its
logits are PyTorch's up to float32 summation order (~1e-6 on these models' logits): log-probs agree within 1e-4
and perplexity on the same windows within a relative 1e-4. int8 weights (per channel, asymmetric) move a random
tiny model's perplexity by well under 20%.

Cost: one process in the OpenVINO environment exports and loads both models and answers every member
(openvino_probe.py); one `optkit run` of an ov.compress int8 variant (a worker here, the export there, a worker
there); one `optkit run` refused at preflight, and refusals in-process that start no worker."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from optkit import envs
from tests.conftest import CORPUS, build_family_model, optkit_cli, torch_logprobs

SPEC = envs.spec_of("openvino")
ENV = envs.ready(SPEC)
needs_env = pytest.mark.skipif(ENV is None, reason="the OpenVINO environment is not built here (make setup-openvino)")
FAMILIES = ("llama", "qwen3")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ov-models")
    return {f: build_family_model(f, root / f, seed=5) for f in FAMILIES}


@pytest.fixture(scope="module")
def probed(models, tmp_path_factory):
    from transformers import AutoTokenizer

    tmp = tmp_path_factory.mktemp("ov-probe")
    text_file = tmp / "corpus.txt"
    text_file.write_text(CORPUS)
    ask = {"models": {k: str(v) for k, v in models.items()}}
    for family, folder in models.items():
        ids = AutoTokenizer.from_pretrained(folder)(CORPUS[:200])["input_ids"][:24]
        ask[family] = {"ids": ids, "text": CORPUS[:300], "text_file": str(text_file)}
    (tmp / "ask.json").write_text(json.dumps(ask))
    env = envs.worker_env(ENV)
    env["OPTKIT_CACHE"] = str(tmp / "cache")
    run = subprocess.run([str(envs.python(ENV)), str(Path(__file__).with_name("openvino_probe.py")),
                          str(tmp / "ask.json"), str(tmp / "out.json")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert any((tmp / "cache" / "openvino").iterdir())  # the IR is cached under OPTKIT_CACHE
    out = json.loads((tmp / "out.json").read_text())
    return {f: (out[f], ask[f], models[f], text_file) for f in models}


@needs_env
@pytest.mark.parametrize("family", FAMILIES)
def test_scores_and_decoding_match_pytorch(probed, family):
    from transformers import AutoTokenizer

    from optkit import checkpoints, loading
    from optkit.evaluators import perplexity
    from optkit.recipe import PerplexitySpec

    got, ask, folder, text_file = probed[family]
    ids = ask["ids"]
    logp = torch_logprobs(folder, ids)
    assert got["token_logprobs"] == pytest.approx([float(logp[i - 1, ids[i]]) for i in range(1, len(ids))],
                                                  abs=1e-4)
    assert got["cache_error"] < 1e-4
    # the benchmark's decode loop (openvino-genai's scheduler here: the tokenizer converts) picks PyTorch's argmax
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    for prompt, tokens in zip((ids[:8], ids[4:12]), got["stepped"]):
        seq = list(prompt)
        for tok in tokens:
            with torch.no_grad():
                row = torch.log_softmax(model(torch.tensor([seq])).logits[0, -1], dim=-1)
            assert float(row[tok]) >= float(row.max()) - 1e-4
            seq.append(tok)
    settings = got["settings"]
    assert settings["INFERENCE_PRECISION_HINT"] == "f32" and settings["KV_CACHE_PRECISION"] == "f32"
    assert settings["decoding"].startswith("openvino_genai.ContinuousBatchingPipeline")
    assert [c["result"] for c in got["checks"]] == ["agrees"] and got["crossed"] == "disagrees"
    assert got["encoded"] == AutoTokenizer.from_pretrained(folder)(ask["text"], add_special_tokens=False)["input_ids"]
    assert got["format"] == "hf" and got["startup"]["total"] > 0
    assert got["bench"]["batches"] == [1, 2] and got["bench"]["decode"] > 0
    # perplexity on the same windows of the same text in PyTorch, float32 both sides
    lm = loading.load(checkpoints.resolve(str(folder)))
    spec = PerplexitySpec(path=str(text_file), max_tokens=200, window=64, stride=32)
    assert got["perplexity"] == pytest.approx(perplexity.evaluate(lm, spec)[0].value, rel=1e-4)


@needs_env
def test_run_compresses_in_optkit_and_measures_in_openvino(models, tmp_path):
    """`optkit run`: an int8 variant whose ov.compress step runs in optkit's environment (the model saved, the export
    and NNCF in OpenVINO's), measured in OpenVINO's (two workers, one result), its environment and precision
    recorded; its perplexity against PyTorch's fp32 on the same windows, computed here. (The float export is
    checked against PyTorch above, through the probe: one OpenVINO worker fewer.)"""
    import yaml

    from optkit import checkpoints, loading
    from optkit.evaluators import perplexity
    from optkit.recipe import PerplexitySpec

    text = tmp_path / "corpus.txt"
    text.write_text(CORPUS)
    spec = {"path": str(text), "max_tokens": 200, "window": 64, "stride": 32}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "ov-handoff", "model": {"checkpoint": str(models["llama"])}, "eval": {"perplexity": spec},
        "variants": [{"name": "ov-int8", "engine": "openvino", "steps": [{"method": "ov.compress"}]}],
        "bench": None}))
    res = optkit_cli("run", str(recipe), "--out", str(tmp_path / "run"), timeout=600,
                     env={"OPTKIT_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr[-3000:]
    [int8] = json.loads((tmp_path / "run" / "report.json").read_text())["variants"]
    assert int8["status"] == "ok", int8.get("error")
    assert int8["engine"] == "openvino" and int8["format"] == "openvino"
    [step] = int8["steps"]  # the first worker's record, kept in the merge
    assert step["method"] == "ov.compress" and step["details"]["weight_types"].get("u8", 0) > 0
    assert {f"model.layers.{i}.self_attn.q_proj.weight" for i in (0, 1)} <= {m.removeprefix("self.")
                                                                             for m in step["modules_changed"]}
    run = int8["engine_run"]
    assert run["environment"].startswith("openvino-") and run["versions"]["nncf"]
    assert run["settings"]["INFERENCE_PRECISION_HINT"] == "f32" and run["settings"]["KV_CACHE_PRECISION"] == "f32"
    # int8 weights move a random tiny model's perplexity a little, not a lot
    fp32 = perplexity.evaluate(loading.load(checkpoints.resolve(str(models["llama"]))), PerplexitySpec(**spec))
    ppl = int8["accuracy"][0]["value"]
    assert ppl != pytest.approx(fp32[0].value, rel=1e-6) and abs(ppl / fp32[0].value - 1) < 0.2


def _bad_recipe(folder: Path, text: Path, params: dict) -> dict:
    return {"name": "ov-bad", "model": {"checkpoint": str(folder)}, "bench": None,
            "variants": [{"name": "ov", "engine": "openvino", "steps": [{"method": "ov.compress", "params": params}]}],
            "eval": {"perplexity": {"path": str(text), "max_tokens": 50}}}


def test_an_unknown_option_is_one_line_and_exit_2(models, tmp_path):
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_bad_recipe(models["qwen3"], recipe, {"bitz": 8})))
    res = optkit_cli("run", str(recipe), "--out", str(tmp_path / "run"), timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "params.bitz" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "report.json").exists()


@pytest.mark.parametrize("params, env, says", [
    ({"bits": 4, "group_size": 48}, {}, "group_size 48 does not divide"),
    ({"bits": 8, "awq": True}, {}, "awq and scale_estimation are for int4"),
    ({"include": ["q_proj"]}, {}, "no include / exclude"),
    ({}, {"OPTKIT_OV_PRECISION": "int3"}, "OPTKIT_OV_PRECISION='int3'"),
])
def test_preflight_refuses_before_any_worker(models, tmp_path, monkeypatch, params, env, says):
    """The same refusals in-process (plan: preflight, no worker, no OpenVINO): what the CLI turns into exit 2."""
    from optkit import pipeline
    from optkit.errors import BadInput
    from optkit.recipe import Recipe

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(BadInput, match=says):
        pipeline.plan(Recipe(**_bad_recipe(models["qwen3"], tmp_path, params)), base_dir=tmp_path)
