"""The sizes optkit needs about a GGUF model, read from its header alone (no weights, no transformers): the
vocabulary, layers, attention heads and context length that the roofline, the KV-cache estimate and lm-eval's
context window use. A file's own config, so a GGUF runs in llama.cpp whatever transformers knows about its
architecture."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GgufConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    head_dim: int | None = None
    intermediate_size: int | None = None
    tie_word_embeddings: bool = False


def from_header(head) -> GgufConfig:
    """The config a GGUF header describes; sizes llama.cpp keeps per layer (arrays) count as unknown (0)."""
    meta, arch = head.metadata, head.architecture

    def number(key: str, default: int = 0) -> int:
        value = meta.get(f"{arch}.{key}")
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default

    embd = head.shapes.get("token_embd.weight") or []
    heads = number("attention.head_count")
    hidden = number("embedding_length")
    return GgufConfig(
        architecture=arch, vocab_size=int(embd[1]) if len(embd) > 1 else number("vocab_size"), hidden_size=hidden,
        num_hidden_layers=number("block_count"), num_attention_heads=heads,
        num_key_value_heads=number("attention.head_count_kv", heads), max_position_embeddings=number("context_length"),
        head_dim=number("attention.key_length") or (hidden // heads if heads else None),
        intermediate_size=number("feed_forward_length") or None,
        tie_word_embeddings="output.weight" not in head.tensor_types)
