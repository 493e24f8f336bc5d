"""A GGUF's vocabulary as llama.cpp serves it, and the checks that hold optkit's tokenizers to it.

`NativeTokenizer` is llama.cpp's own tokenizer over the file (a vocab-only load: no weights), behind the small
part of the Hugging Face tokenizer interface optkit's evaluators use (`__call__`, `encode`, `decode`, the special
token ids): the llama.cpp engine scores with it, so every id a GGUF variant sees is the one llama-server would
feed it. Text is tokenized as a server prompt is (special tokens in the text parsed, the file's BOS/EOS rule when
special tokens are added).

`check()` compares another tokenizer (the HF tokenizer optkit built for the PyTorch copy of a GGUF, or the one a
GGUF was exported from) with the native one on a fixed sample (`sample_texts`: common/sample.py's texts and the
file's own special tokens) and on decode(encode(text)). optkit refuses to
score a model through a tokenizer that disagrees.

The HF tokenizer itself is built from the file's metadata by `hf_tokenizer.py`.
"""

from __future__ import annotations

import ctypes
import time
import weakref
from pathlib import Path

from optkit.common.sample import SAMPLE, id_mismatches
from optkit.errors import RunError
from optkit.results import TokenizerCheck


def library():
    from optkit.engines.llamacpp.lib import library as load

    return load()


class NativeTokenizer:
    """llama.cpp's tokenizer for one GGUF file, loaded vocab-only (milliseconds to a second: no weights)."""

    def __init__(self, path, model=None, owner=None):
        """model: the llama_model of a LlamaCppLM (`owner`, kept alive with this tokenizer), else a vocab-only load."""
        from optkit.engines.llamacpp.lib import load_model

        lib = library()
        self.path, self._owner = Path(path), owner
        self._model = model
        if model is None:
            self._model = load_model(self.path, vocab_only=True)
            self._free = weakref.finalize(self, lib.llama_model_free, self._model)
        self.vocab = lib.llama_model_get_vocab(self._model)
        self.vocab_size = int(lib.llama_vocab_n_tokens(self.vocab))
        self.add_bos = bool(lib.llama_vocab_get_add_bos(self.vocab))
        self.add_eos = bool(lib.llama_vocab_get_add_eos(self.vocab))

    def _special(self, token: int) -> int | None:
        return None if token < 0 or token >= self.vocab_size else int(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._special(library().llama_vocab_bos(self.vocab))

    @property
    def eos_token_id(self) -> int | None:
        return self._special(library().llama_vocab_eos(self.vocab))

    def encode(self, text: str, add_special_tokens: bool = True, split_special_tokens: bool = False) -> list[int]:
        """Token ids with HF's conventions: add_special_tokens applies the file's BOS/EOS rule; special tokens
        written in the text are parsed as llama-server parses a prompt, unless split_special_tokens (text stays
        text: what optkit scores perplexity and fidelity on)."""
        lib, data = library(), text.encode("utf-8")
        room = len(data) + 8
        while True:
            ids = (lib.llama_token * room)()
            n = lib.llama_tokenize(self.vocab, data, len(data), ids, room, add_special_tokens,
                                   not split_special_tokens)
            if n >= 0:
                return list(ids[:n])
            room = -n

    def __call__(self, text: str, add_special_tokens: bool = True, split_special_tokens: bool = False) -> dict:
        return {"input_ids": self.encode(text, add_special_tokens, split_special_tokens)}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        lib = library()
        ids = [int(i) for i in ids]
        tokens = (lib.llama_token * max(1, len(ids)))(*ids)
        room = 16 * len(ids) + 16
        while True:
            buf = ctypes.create_string_buffer(room)
            n = lib.llama_detokenize(self.vocab, tokens, len(ids), buf, room, skip_special_tokens,
                                     not skip_special_tokens)  # special tokens as text, as HF's decode shows them
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            room = -n

    def convert_ids_to_tokens(self, ids) -> list[str]:
        lib = library()
        return [lib.llama_vocab_get_text(self.vocab, int(i)).decode("utf-8", errors="replace") for i in ids]

    def convert_tokens_to_ids(self, token: str) -> int | None:
        ids = self.encode(token, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    def __len__(self) -> int:
        return self.vocab_size

    def describe(self) -> str:
        from optkit.engines.llamacpp.lib import version

        return f"llama.cpp {version()}'s tokenizer on {self.path.name}"


def sample_texts(native: NativeTokenizer | None = None) -> list[str]:
    """The fixed sample, plus texts around the file's own special tokens (BOS, EOS and the chat template's turn
    markers where the vocabulary has them), as a chat-formatted prompt contains them."""
    texts = list(SAMPLE)
    if native is not None:
        specials = [t for t in (native.bos_token_id, native.eos_token_id) if t is not None]
        names = native.convert_ids_to_tokens(specials)
        for name in ("<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>", "<|eot_id|>",
                     "<|start_header_id|>", "<|end_header_id|>", "<|user|>", "<|assistant|>", "<|end|>"):
            if native.convert_tokens_to_ids(name) is not None:
                names.append(name)
        for name in dict.fromkeys(names):
            texts.append(f"{name}user\nWhat is 2+2?{name}\n{name}assistant\nIt is 4.")
    return texts


def check(tokenizer, native: NativeTokenizer, what: str, scored_with: str) -> TokenizerCheck:
    """Compare `tokenizer` (HF-like: __call__, decode) with llama.cpp's on the fixed sample in both ways optkit
    tokenizes: text as text (no special tokens added or parsed: perplexity, fidelity, calibration) and text as a
    prompt (the file's BOS/EOS rule, special tokens in the text parsed: lm-eval requests); and check that it decodes
    the sample's plain texts back to themselves (lm-eval's generation tasks cut answers out of decoded text)."""
    started = time.perf_counter()
    texts = sample_texts(native)
    mismatches, round_trips, detail = 0, 0, ""
    for text in texts:
        missed, first = id_mismatches(
            text, lambda t, prompt: list(tokenizer(t, add_special_tokens=prompt,
                                                   split_special_tokens=not prompt)["input_ids"]),
            lambda t, prompt: native.encode(t, prompt, split_special_tokens=not prompt), "llama.cpp's")
        mismatches, detail = mismatches + missed, detail or first
        if text in SAMPLE and tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) != text:
            round_trips += 1  # prose without special tokens must come back as it went in
            if not detail:
                detail = f"decode(encode({text[:40]!r})) does not give the text back"
    return TokenizerCheck(
        model=what, scored_with=scored_with, reference=native.describe(), samples=2 * len(texts),
        mismatches=mismatches, round_trip_failures=round_trips,
        result="agrees" if not mismatches and not round_trips else "disagrees", detail=detail,
        seconds=round(time.perf_counter() - started, 3))


def native(what: str, tokenizer: NativeTokenizer) -> TokenizerCheck:
    """The record of a model scored with its serving engine's own tokenizer."""
    return TokenizerCheck(model=what, scored_with=tokenizer.describe(), reference=tokenizer.describe(), samples=0,
                          mismatches=0, round_trip_failures=0, result="native")


def skipped(what: str, scored_with: str, why: str) -> TokenizerCheck:
    return TokenizerCheck(model=what, scored_with=scored_with, reference="llama.cpp", samples=0, mismatches=0,
                          round_trip_failures=0, result="skipped", detail=why, seconds=0.0)


def refusal(result: TokenizerCheck, path) -> str:
    """The one line a disagreeing check stops a model with."""
    from optkit.gguf_header import read

    try:
        model = read(path).metadata.get("tokenizer.ggml.model", "?")
    except Exception:  # a header we cannot read says nothing more useful than the check itself
        model = "?"
    failing = result.mismatches + result.round_trip_failures
    return (f"the tokenizer optkit would score {result.model} with ({result.scored_with}) disagrees with llama.cpp's "
            f"on {failing} of {result.samples} samples, {result.detail}; optkit will not score it. Run the file in "
            f"llama.cpp (engine: llamacpp), or report it with the file's tokenizer.ggml.model ({model!r})")


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def check_against_file(tokenizer, gguf: Path, what: str, scored_with: str) -> TokenizerCheck:
    """The check against the file's own vocabulary; 'skipped' (with why) when llama.cpp is not installed or the file
    is gone; RunError when llama.cpp cannot read the vocabulary."""
    if not llama_cpp_available():
        return skipped(what, scored_with, "llama-cpp-python is not installed (pip install 'optkit[llamacpp]'), so the "
                       "tokenizer could not be compared with llama.cpp's")
    if not Path(gguf).is_file():
        return skipped(what, scored_with, f"the GGUF it was converted from ({gguf}) is no longer there")
    try:
        native = NativeTokenizer(gguf)
    except RunError as exc:
        raise RunError(f"cannot read {gguf}'s vocabulary with llama.cpp to check the tokenizer: {exc}") from None
    return check(tokenizer, native, what, scored_with)
