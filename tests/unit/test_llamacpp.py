"""llama.cpp as an engine, on tiny random models of two families (Llama with BOS, Qwen3 without): gguf.export
through llama.cpp's converter gives llama.cpp logits that match PyTorch's (perplexity on the same token ids,
which are llama.cpp's own tokenizer's too), gguf.quantize changes tensor types the way llama.cpp names them
(include/exclude, imatrix, K and IQ types on a model wide enough for them), the cache path and multi-sequence
batches agree with a plain forward pass, and the benchmark says which batch sizes llama.cpp cannot decode."""

import math
import re

import pytest
import torch

pytest.importorskip("llama_cpp")

from optkit import checkpoints, loading, registry  # noqa: E402
from optkit.engines.method import apply_steps  # noqa: E402
from optkit.errors import RunError  # noqa: E402
from optkit.evaluators.perplexity import token_nlls  # noqa: E402
from optkit.recipe import BenchSpec, Step  # noqa: E402
from tests.conftest import CORPUS  # noqa: E402

FAMILIES = ["llama", "qwen3"]


def pair(tiny_gguf, family):
    """(the PyTorch model, its f32 GGUF in llama.cpp, the export's record)."""
    folder, path, record = tiny_gguf(family)
    torch_lm = loading.load(checkpoints.resolve(str(folder)))
    return torch_lm, registry.engines.get("llamacpp").open(path, like=torch_lm), record


def llama_ids(lm, text: str) -> list[int]:
    """llama.cpp's own tokenizer on the file's embedded vocabulary."""
    from optkit.engines.llamacpp.lib import library

    lib, data = library(), text.encode()
    buf = (lib.llama_token * (len(data) + 8))()
    n = lib.llama_tokenize(lib.llama_model_get_vocab(lm.model), data, len(data), buf, len(data) + 8, False, False)
    return list(buf[:n])


def ppl(lm, ids) -> float:
    nlls = token_nlls(lm, ids, 64, 32, lm.prefix)
    return math.exp(sum(nlls) / len(nlls))


@pytest.mark.parametrize("family", FAMILIES)
def test_export_quantize_perplexity(tiny_gguf, family):
    torch_lm, lm, record = pair(tiny_gguf, family)
    assert lm.engine == "llamacpp" and lm.format == "gguf" and lm.params == torch_lm.params
    check = record.details["validation"]
    assert check["top1_agreement"] == 1.0 and check["max_rel_diff"] < 1e-3, check
    ids = torch_lm.encode(CORPUS[:400])
    assert llama_ids(lm, CORPUS[:400]) == ids and lm.prefix == torch_lm.prefix  # same ids, same BOS rule
    base = ppl(torch_lm, ids)
    assert abs(ppl(lm, ids) / base - 1) < 0.005
    a, _ = torch_lm.logits(torch.tensor([torch_lm.prefix + ids[:100]]))
    b, _ = lm.logits(torch.tensor([lm.prefix + ids[:100]]))
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.99
    errors, sizes = {}, {}
    for kind in ("Q8_0", "Q4_0"):
        q, (step,) = apply_steps(lm, [Step(method="gguf.quantize", params={"type": kind})])
        assert q.engine == "llamacpp" and step.details["types"].get(kind, 0) >= 10, step.details
        assert step.modules_changed and all(n.endswith(".weight") for n in step.modules_changed)
        errors[kind], sizes[kind] = abs(ppl(q, ids) / base - 1), q.size_bytes()
    assert errors["Q8_0"] < 0.02 and errors["Q8_0"] < errors["Q4_0"]
    assert sizes["Q4_0"] < sizes["Q8_0"] < lm.size_bytes() / 2.5


def test_cache_path_and_batches_match_a_plain_forward(tiny_gguf):
    torch_lm, lm, _ = pair(tiny_gguf, "llama")
    ids = torch.tensor([torch_lm.prefix + torch_lm.encode(CORPUS[:200])[:40]])
    full, _ = lm.logits(ids)
    last, past = lm.start(ids[:, :-5])
    assert torch.allclose(last[0], full[0, -6], atol=1e-3)
    for i in range(5):  # decode step by step through the KV cache
        last, past = lm.step(ids[:, -5 + i:][:, :1], past)
        assert torch.allclose(last[0], full[0, -5 + i], atol=1e-3)
    # two sequences as two llama.cpp sequences in one batch: the greedy tokens of each alone
    prompts = torch.stack([ids[0, :20], ids[0, 10:30]])
    alone = [greedy(lm, p[None], 8) for p in prompts]
    assert greedy(lm, prompts, 8) == [a[0] for a in alone]
    _, stale = lm.start(ids[:, :4])
    lm.start(ids[:, :6])  # a later start replaces the one cache llama.cpp keeps per model
    with pytest.raises(RunError, match="replaced"):
        lm.step(ids[:, :1], stale)


def greedy(lm, prompt, n):
    logits, past = lm.start(prompt)
    out = [[] for _ in range(len(prompt))]
    for _ in range(n):
        token = logits.argmax(-1, keepdim=True)
        for row, t in zip(out, token[:, 0].tolist()):
            row.append(t)
        logits, past = lm.step(token, past)
    return out


def test_include_exclude_and_imatrix(tiny_gguf, text_file):
    _, lm, _ = pair(tiny_gguf, "llama")
    params = {"type": "Q4_0", "exclude": ["ffn_down"], "imatrix": {"samples": 2, "seq_len": 32, "path": str(text_file)}}
    q, (step,) = apply_steps(lm, [Step(method="gguf.quantize", params=params)])
    kept = {s.module for s in step.modules_skipped}
    assert kept == {"blk.0.ffn_down.weight", "blk.1.ffn_down.weight"}
    from optkit.gguf_header import read

    types = read(q.path).tensor_types
    assert types["blk.0.ffn_down.weight"] == "F32" and types["blk.0.ffn_up.weight"] == "Q4_0"
    assert step.details["imatrix"]["tensors"] >= 14 and step.details["imatrix"]["tokens"] == 64
    keep8, (step8,) = apply_steps(lm, [Step(method="gguf.quantize", params={"type": "Q4_0", "include": ["attn_"],
                                                                               "keep_type": "Q8_0"})])
    types = read(keep8.path).tensor_types
    assert types["blk.1.attn_q.weight"] == "Q4_0" and types["blk.1.ffn_up.weight"] == "Q8_0"


def test_an_embedding_type_its_rows_do_not_fit_is_refused_before_quantizing(tiny_gguf):
    """llama.cpp applies token_embedding_type without its fallback, writes rows a 256-block type cannot hold
    and then fails with "quantized data validation failed" (seen on SmolLM2's 576-wide rows): optkit names the
    tensor and the types that fit instead, before computing an imatrix or calling the quantizer."""
    from optkit.errors import RunError
    from optkit.gguf_header import read

    _, lm, _ = pair(tiny_gguf, "llama")
    with pytest.raises(RunError, match=r"token_embedding_type Q4_K: token_embd.weight has rows of 64 weights, not a "
                                       r"multiple of Q4_K's blocks of 256.*use one of Q8_0, Q5_1, Q5_0, Q4_1, Q4_0"):
        apply_steps(lm, [Step(method="gguf.quantize", params={"type": "Q8_0", "token_embedding_type": "q4_k"})])
    params = {"type": "Q8_0", "token_embedding_type": "Q4_0"}
    ok, (step,) = apply_steps(lm, [Step(method="gguf.quantize", params=params)])
    assert read(ok.path).tensor_types["token_embd.weight"] == "Q4_0" and "fallback" not in step.details
    # a K type on rows it does not fit: llama.cpp falls back per tensor, and the step says so
    _, (step,) = apply_steps(lm, [Step(method="gguf.quantize", params={"type": "Q4_K_M"})])
    assert re.fullmatch(r"\d+ of \d+ quantized tensors have rows of 64/128 weights, which Q4_K's blocks of 256 do not "
                        r"divide: llama.cpp gave them \d+ Q5_0.*", step.details["fallback"]), step.details


def test_k_and_iq_types_on_a_wide_model(tmp_path):
    """K and IQ types quantize 256-wide blocks: the 64-wide tiny model falls back to other types, this one not."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from optkit.gguf_header import read
    from tests.conftest import build_tiny_model

    folder = build_tiny_model(tmp_path / "hf")
    config = LlamaConfig.from_pretrained(folder)
    config.update({"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 1})
    LlamaForCausalLM(config).save_pretrained(folder)
    lm = loading.load(checkpoints.resolve(str(folder)))
    steps = [Step(method="gguf.export", params={"outtype": "f16"})]
    f16, _ = apply_steps(lm, steps)
    for kind, want in (("Q4_K_M", {"Q4_K", "Q6_K"}), ("IQ4_XS", {"IQ4_XS"})):
        _, (step,) = apply_steps(f16, [Step(method="gguf.quantize", params={"type": kind})])
        assert want <= set(step.details["types"]), step.details
    q, _ = apply_steps(f16, [Step(method="gguf.quantize", params={"type": "Q4_K_M", "token_embedding_type": "Q4_K"})])
    assert read(q.path).tensor_types["token_embd.weight"] == "Q4_K"  # 256 wide: the type fits, nothing is refused


def test_bench_batches_and_unsupported_sizes(tiny_gguf):
    from optkit.bench import paired_speedup, run_bench

    torch_lm, lm, _ = pair(tiny_gguf, "qwen3")
    spec = BenchSpec(prompt_len=8, gen_len=4, warmup=0, repeats=2, max_repeats=2, min_seconds=0,
                     batch_sizes=[1, 2, 300], paired_rounds=2, threads=1)
    result = run_bench(lm, spec)
    assert [p.batch_size for p in result.throughput] == [1, 2] and result.threads == 1
    assert result.batch_notes == ["batch 300: not supported (llamacpp decodes at most 256 sequences together)"]
    assert result.size_mb == pytest.approx(lm.size_bytes() / 2**20) and result.peak_memory_mb
    paired = paired_speedup(lm, torch_lm, "fp32", spec)  # llama.cpp and torch alternating in one process
    assert paired.decode_speedup.n == 2 and paired.decode_speedup.median > 0


def test_llamacpp_takes_its_default_thread_count_from_omp_num_threads_like_torch(monkeypatch):
    """Under the Ray executor (OMP_NUM_THREADS set per task) llama.cpp took every core while torch took its share."""
    import os

    from optkit.engines.llamacpp.lib import default_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    for unset in ("", "0", "many"):
        monkeypatch.setenv("OMP_NUM_THREADS", unset)
        assert default_threads() == len(os.sched_getaffinity(0))
