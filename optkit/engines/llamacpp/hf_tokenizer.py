"""An HF tokenizer built from a GGUF's own vocabulary metadata, for the PyTorch copy of a GGUF and what is exported
from it.

transformers' GGUF tokenizer converter is not faithful for every vocabulary type: on a Gemma 3 file it split
" world" into three tokens, and after save_pretrained and a reload into single characters (token perplexity 70x
too high, in both engines, silently). So optkit writes the tokenizer.json itself, reading the same metadata the
way llama.cpp's tokenizer reads it (llama.cpp's src/llama-vocab.cpp), and then holds it against llama.cpp on a
fixed sample (vocab.check) before anything is scored with it. Built here:

- "llama" (SentencePiece-style, llama.cpp's SPM): spaces escaped to U+2581, a space prefix unless the file says
  otherwise, no pre-tokenizer, merges of any two adjacent pieces whose concatenation is a token, highest score
  first, and byte fallback to <0xXX> tokens;
- "gpt2" (byte-level BPE): the pre-tokenizer regexes llama.cpp uses for the file's `tokenizer.ggml.pre` (PRE),
  the GPT-2 byte alphabet, the file's ranked merges;
- "gemma4" (BPE over raw UTF-8 with escaped spaces and byte fallback).

Any other vocabulary (WordPiece, Unigram/T5, RWKV, an unknown pre-tokenizer) raises Unsupported, naming it.
"""

from __future__ import annotations

from pathlib import Path

KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"

# llama.cpp's pre-tokenizer regexes (applied in order, each splitting what the previous left, matches isolated)
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN35 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+"
           r"|\s+(?!\S)|\s+")


class Pre:
    """One llama.cpp BPE pre-tokenizer: its regexes and the flags llama.cpp sets with it."""

    def __init__(self, regexes, ignore_merges=False, add_bos=False, clean_spaces=True):
        self.regexes, self.ignore_merges, self.add_bos, self.clean_spaces = list(regexes), ignore_merges, add_bos, \
            clean_spaces


_LLAMA3_PRE = Pre([_LLAMA3], ignore_merges=True, add_bos=True)
_STARCODER = [r"\p{N}", _GPT2]
PRE = {
    "default": Pre([r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]"]),
    **dict.fromkeys(("gpt-2", "phi-2", "mpt", "olmo"), Pre([_GPT2])),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"), _LLAMA3_PRE),
    **dict.fromkeys(("dbrx", "smaug-bpe"), Pre([_LLAMA3])),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), Pre([_QWEN2], clean_spaces=False)),
    "stablelm2": Pre([_QWEN2]),
    "qwen35": Pre([_QWEN35], clean_spaces=False),
    **dict.fromkeys(("starcoder", "refact", "codeshell"), Pre(_STARCODER)),
    **dict.fromkeys(("command-r", "smollm"), Pre(_STARCODER, clean_spaces=False)),
    "falcon": Pre([r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, "[0-9][0-9][0-9]"]),
    "deepseek-coder": Pre(["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
                           r"\p{N}"], clean_spaces=False),
}


class Unsupported(Exception):
    """This vocabulary type cannot be rebuilt faithfully as an HF tokenizer (the message names it)."""


def build(path):
    """A transformers PreTrainedTokenizerFast that tokenizes like llama.cpp does with the file's vocabulary."""
    from optkit.gguf_header import read

    meta = read(Path(path), arrays=KEYS).metadata
    model = meta.get("tokenizer.ggml.model")
    if model == "llama":
        tok, add_bos, clean = _spm(meta), meta.get("tokenizer.ggml.add_bos_token", True), False
    elif model == "gpt2":
        pre_name = meta.get("tokenizer.ggml.pre") or "default"
        if pre_name not in PRE:
            raise Unsupported(f"byte-level BPE with llama.cpp pre-tokenizer {pre_name!r} (optkit rebuilds "
                              f"{', '.join(sorted(PRE))})")
        pre = PRE[pre_name]
        tok, add_bos, clean = _bpe(meta, pre), meta.get("tokenizer.ggml.add_bos_token", pre.add_bos), \
            pre.clean_spaces
    elif model == "gemma4":  # llama.cpp forces BOS on for this vocabulary
        tok, add_bos, clean = _gemma4(meta), True, True
    else:
        raise Unsupported(f"tokenizer.ggml.model {model!r} (optkit rebuilds 'llama' (SentencePiece-style), 'gpt2' "
                          "(byte-level BPE) and 'gemma4')")
    return _wrap(tok, meta, bool(add_bos), bool(meta.get("tokenizer.ggml.add_eos_token", False)), clean)


def _table(meta) -> tuple[list[str], list[int], dict[str, int]]:
    """Tokens, their types, and text -> id as llama.cpp keeps it (a repeated text maps to its last id)."""
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = list(meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens))
    for i, t in enumerate(tokens):
        if not t:  # llama.cpp renames empty tokens the same way
            tokens[i] = f"[EMPTY_{i}]"
    return tokens, types, {t: i for i, t in enumerate(tokens)}


def _spm(meta):
    from tokenizers import Tokenizer, decoders, models, normalizers

    tokens, types, ids = _table(meta)
    scores = list(meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens))
    # llama.cpp merges any two adjacent pieces whose concatenation is a token, the highest-scoring first
    merges = []
    for text, i in ids.items():
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in ids and right in ids:
                merges.append((-scores[i], i, left, right))
    merges.sort()
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    has_bytes = any(t == BYTE for t in types)
    tok = Tokenizer(models.BPE(vocab=ids, merges=[(a, b) for _, _, a, b in merges], byte_fallback=has_bytes,
                               unk_token=tokens[unk] if isinstance(unk, int) and 0 <= unk < len(tokens) else None,
                               fuse_unk=False))
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Replace(" ", SPACE)] + ([normalizers.Prepend(SPACE)] if prefix else [])
    tok.normalizer = normalizers.Sequence(steps)
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
                                    + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tok


def _merges(meta) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]


def _bpe(meta, pre: Pre):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    _, _, ids = _table(meta)
    tok = Tokenizer(models.BPE(vocab=ids, merges=_merges(meta), ignore_merges=pre.ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def _gemma4(meta):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    _, types, ids = _table(meta)
    tok = Tokenizer(models.BPE(vocab=ids, merges=_merges(meta), byte_fallback=any(t == BYTE for t in types)))
    tok.normalizer = normalizers.Replace(" ", SPACE)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[^\\n]+|[\\n]+"), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok


def _rstrip(meta, specials: list[str]) -> set[str]:
    """Special tokens llama.cpp strips the whitespace after, set by model name as llama.cpp sets them (Phi-3's
    chat markers; its <s>, <unk> and <|endoftext|> excepted, its </s> included)."""
    name = str(meta.get("general.name") or "").lower()
    if "phi-3" not in name and "phi3" not in name:
        return set()
    return (set(specials) | {"</s>"}) - {"<unk>", "<s>", "<|endoftext|>"}


def _wrap(tok, meta, add_bos: bool, add_eos: bool, clean_spaces: bool):
    """Special tokens as llama.cpp splits them out of text (control and unknown tokens as special, user-defined
    ones always), the file's BOS/EOS rule as the post-processor, and the file's special token names."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    tokens, types, _ = _table(meta)
    rstrip = _rstrip(meta, [t for t, k in zip(tokens, types) if k in (CONTROL, UNKNOWN, USER_DEFINED)])
    added = [AddedToken(t, special=k in (CONTROL, UNKNOWN), normalized=False, rstrip=t in rstrip)
             for t, k in zip(tokens, types) if k in (CONTROL, UNKNOWN, USER_DEFINED)]
    tok.add_special_tokens([a for a in added if a.special])
    tok.add_tokens([a for a in added if not a.special])

    def name(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    bos, eos = name("bos"), name("eos")
    template, specials = "$A", []
    if add_bos and bos is not None:
        template, specials = f"{bos} {template}", [(bos, meta["tokenizer.ggml.bos_token_id"])]
    if add_eos and eos is not None:
        template += f" {eos}"
        specials.append((eos, meta["tokenizer.ggml.eos_token_id"]))
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=name("unknown"),
                                   pad_token=name("padding"), clean_up_tokenization_spaces=clean_spaces)
    if meta.get("tokenizer.chat_template"):
        fast.chat_template = meta["tokenizer.chat_template"]
    return fast
