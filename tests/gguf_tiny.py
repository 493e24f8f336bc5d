"""Tiny random-weight GGUF models around real vocabularies, for the served-model tests: llama.cpp's own test
vocabularies (vocabulary-only GGUFs that `make setup` extracts from the llama-cpp-python sdist) wrapped, with
gguf-py, in a 2-layer model of a matching architecture that both llama.cpp and transformers read. Weights are
large enough that the next-token distribution depends strongly on the ids fed in, so a wrong id shows in the
numbers."""

from __future__ import annotations

import sys
from pathlib import Path

HIDDEN, LAYERS, HEADS, KV_HEADS, FF, CONTEXT = 64, 2, 4, 2, 128, 512


def vocab_dir() -> Path:
    from importlib.metadata import version

    return Path(sys.prefix) / "share" / f"llama.cpp-vocab-{version('llama-cpp-python')}"


def vocab_file(name: str) -> Path:
    path = vocab_dir() / f"ggml-vocab-{name}.gguf"
    if not path.is_file():
        import pytest

        pytest.fail(f"{path} is missing; make setup extracts llama.cpp's test vocabularies into the venv")
    return path


def _copy_tokenizer(w, meta: dict) -> None:
    w.add_tokenizer_model(meta["tokenizer.ggml.model"])
    if meta.get("tokenizer.ggml.pre"):
        w.add_tokenizer_pre(meta["tokenizer.ggml.pre"])
    w.add_token_list(meta["tokenizer.ggml.tokens"])
    if meta.get("tokenizer.ggml.scores"):
        w.add_token_scores(meta["tokenizer.ggml.scores"])
    if meta.get("tokenizer.ggml.token_type"):
        w.add_token_types(meta["tokenizer.ggml.token_type"])
    if meta.get("tokenizer.ggml.merges"):
        w.add_token_merges(meta["tokenizer.ggml.merges"])
    for key, add in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                     ("unknown_token_id", w.add_unk_token_id), ("padding_token_id", w.add_pad_token_id)):
        if isinstance(meta.get(f"tokenizer.ggml.{key}"), int):
            add(meta[f"tokenizer.ggml.{key}"])
    for key, add in (("add_bos_token", w.add_add_bos_token), ("add_eos_token", w.add_add_eos_token),
                     ("add_space_prefix", w.add_add_space_prefix)):
        if isinstance(meta.get(f"tokenizer.ggml.{key}"), bool):
            add(meta[f"tokenizer.ggml.{key}"])


def write(path: Path, vocab: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A 2-layer `arch` model (llama or qwen2) with `vocab`'s tokenizer and random float32 weights."""
    import gguf
    import numpy as np

    from optkit.gguf_header import read

    keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
    meta = read(vocab, arrays=keys).metadata
    n_vocab = len(meta["tokenizer.ggml.tokens"])
    rng = np.random.default_rng(seed)

    def weight(*shape, std=0.2):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FF)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _copy_tokenizer(writer, meta)
    head, kv = HIDDEN, KV_HEADS * (HIDDEN // HEADS)
    writer.add_tensor("token_embd.weight", weight(n_vocab, HIDDEN, std=1.0))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    writer.add_tensor("output.weight", weight(n_vocab, HIDDEN, std=0.5))
    for i in range(LAYERS):
        b = f"blk.{i}."
        writer.add_tensor(b + "attn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor(b + "attn_q.weight", weight(head, HIDDEN))
        writer.add_tensor(b + "attn_k.weight", weight(kv, HIDDEN))
        writer.add_tensor(b + "attn_v.weight", weight(kv, HIDDEN))
        writer.add_tensor(b + "attn_output.weight", weight(HIDDEN, head))
        if arch == "qwen2":
            for name, width in (("attn_q.bias", head), ("attn_k.bias", kv), ("attn_v.bias", kv)):
                writer.add_tensor(b + name, weight(width))
        writer.add_tensor(b + "ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor(b + "ffn_gate.weight", weight(FF, HIDDEN))
        writer.add_tensor(b + "ffn_up.weight", weight(FF, HIDDEN))
        writer.add_tensor(b + "ffn_down.weight", weight(HIDDEN, FF))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
