"""The model optkit scores is the model as served. A Gemma 3 GGUF was scored 70x wrong in both engines because the
tokenizer optkit used was transformers' reading of the file, not llama.cpp's. These tests hold optkit's tokenizers
to llama.cpp's on real vocabularies (llama.cpp's own test vocabularies, with the ids their original tokenizers
gave), run one real vocabulary through both engines, and refuse a tokenizer that disagrees."""

from __future__ import annotations

import json

import pytest

from optkit.engines.llamacpp.convert import hf_folder

pytest.importorskip("llama_cpp", reason="the llamacpp extra is not installed")

from tests.gguf_tiny import vocab_file, write  # noqa: E402

# one of each family optkit rebuilds: SentencePiece-style (Llama 2, Phi-3 with its right-strip rule), byte-level BPE
# with each kind of pre-tokenizer (GPT-2, Llama 3, Qwen 2, DeepSeek Coder, Falcon, StarCoder), Gemma 4's raw BPE
BUILT = ["llama-spm", "phi-3", "gpt-2", "llama-bpe", "qwen2", "deepseek-coder", "falcon", "starcoder", "gemma-4"]


def _expected(name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test cases for a vocabulary: texts and the ids the original tokenizer gave them."""
    path = vocab_file(name)
    texts = path.with_suffix(".gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    ids = path.with_suffix(".gguf.out").read_text().split("\n")
    return [(t, [int(x) for x in i.split()]) for t, i in zip(texts, ids)]


@pytest.mark.parametrize("name", BUILT)
def test_tokenizer_built_from_a_gguf_gives_llama_cpps_ids(name):
    from optkit.engines.llamacpp import hf_tokenizer, vocab

    path = vocab_file(name)
    tok = hf_tokenizer.build(path)
    native = vocab.NativeTokenizer(path)
    result = vocab.check(tok, native, name, "built")
    assert result.result == "agrees", result.detail
    assert result.samples >= 2 * 14 and result.mismatches == result.round_trip_failures == 0
    for text, want in _expected(name):  # an independent reference: the original tokenizer's ids
        assert tok(text, add_special_tokens=False)["input_ids"] == want, (name, text)
        assert native.encode(text, False) == want, (name, text)


@pytest.mark.parametrize("name, words", [("bert-bge", "'bert'"), ("nomic-bert-moe", "'t5'"),
                                         ("deepseek-llm", "pre-tokenizer 'deepseek-llm'")])
def test_a_vocabulary_optkit_cannot_rebuild_is_refused_by_name(name, words):
    from optkit.engines.llamacpp import hf_tokenizer

    with pytest.raises(hf_tokenizer.Unsupported, match=words):
        hf_tokenizer.build(vocab_file(name))


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    """Llama 2's SentencePiece vocabulary in a tiny random Llama: the file, and its PyTorch copy (converted once)."""
    from optkit import checkpoints

    path = write(tmp_path_factory.mktemp("spm") / "tiny-llama-spm.gguf", vocab_file("llama-spm"))
    return path, hf_folder(checkpoints.resolve(str(path)))


def test_a_sentencepiece_gguf_scores_the_same_in_both_engines(spm_model, text_file):
    from optkit import checkpoints, loading
    from optkit.engines.llamacpp import agreement
    from optkit.evaluators import perplexity
    from optkit.recipe import PerplexitySpec

    path, folder = spm_model
    torch_lm = loading.load(folder)
    llama_lm = loading.load(checkpoints.resolve(str(path)), engine="llamacpp")
    assert [c.result for c in torch_lm.tokenizer_checks] == ["agrees"]
    assert [c.result for c in llama_lm.tokenizer_checks] == ["native"]
    text = text_file.read_text()
    assert torch_lm.prefix == llama_lm.prefix == [1]  # Llama 2's BOS, by the file's rule
    assert torch_lm.encode(text) == llama_lm.encode(text)
    from optkit.common.sample import SAMPLE
    from optkit.evaluators.lm_eval_model import wrap

    by_torch, by_llama = wrap(torch_lm), wrap(llama_lm)  # lm-eval requests: the same ids in both engines
    assert by_torch.prefix_token_id == by_llama.prefix_token_id == 1
    for t in SAMPLE:
        assert by_torch.tok_encode(t) == by_llama.tok_encode(t) == llama_lm.tokenizer.encode(t), t
    spec = PerplexitySpec(path=str(text_file), max_tokens=300, window=128, stride=64)
    a, b = perplexity.evaluate(torch_lm, spec)[0], perplexity.evaluate(llama_lm, spec)[0]
    assert a.details["tokens"] == b.details["tokens"]
    assert abs(b.value / a.value - 1) < 0.005, (a.value, b.value)
    found = agreement.for_source(path)
    assert found.result == "agrees" and found.kl_mean < 0.01 and found.top1_agreement > 0.95, found


def test_a_broken_tokenizer_is_refused_before_any_variant(spm_model, tmp_path, text_file):
    """One merge family removed from the converted folder's tokenizer: preflight refuses it with one line, exit 2."""
    import shutil

    from click.testing import CliRunner

    from optkit.cli import main

    folder = tmp_path / "broken"
    shutil.copytree(spm_model[1].location, folder)
    tok = json.loads((folder / "tokenizer.json").read_text())
    merges = tok["model"]["merges"]
    joined = ["".join(m) if isinstance(m, list) else m.replace(" ", "") for m in merges]
    tok["model"]["merges"] = [m for m, j in zip(merges, joined) if j != "\u2581world"]  # every way to "▁world"
    assert len(tok["model"]["merges"]) < len(merges)
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    run = CliRunner().invoke(main, ["eval", str(folder), "--text", str(text_file), "--max-tokens", "64",
                                    "-o", str(tmp_path / "run")])
    assert run.exit_code == 2, run.output
    [line] = run.output.strip().splitlines()
    assert line.startswith("optkit: error:") and "disagrees with llama.cpp's" in line and "'Hello world'" in line
    assert "tokenizer.ggml.model ('llama')" in line
    assert not (tmp_path / "run" / "variants").exists()
