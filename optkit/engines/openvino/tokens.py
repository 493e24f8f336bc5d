"""The tokenizer an OpenVINO model is scored and served with. optkit scores with the folder's Hugging Face tokenizer
(the same tokenizer.json optkit's environment reads); openvino-genai serves with the OpenVINO tokenizer converted
from it (export.py). Where that conversion exists the two are held together on the fixed sample (ids as text and as
a prompt, and decode back) and a model whose ids differ is refused with one line: its perplexity would not be the
served model's. Where the conversion failed (GGUF-derived byte-level BPE), nothing serves with another tokenizer:
the check is recorded as skipped, with why, and decoding goes through OVModelForCausalLM with the HF tokenizer.
"""

from __future__ import annotations

import time
from pathlib import Path

from optkit.common.sample import SAMPLE
from optkit.errors import BadInput
from optkit.results import TokenizerCheck


def _first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare(hf, native, what: str, scored_with: str) -> TokenizerCheck:
    """hf: a transformers tokenizer; native: openvino_genai.Tokenizer."""
    started = time.perf_counter()
    mismatches, round_trips, detail = 0, 0, ""
    for text in SAMPLE:
        for prompt in (False, True):
            ours = list(hf(text, add_special_tokens=prompt, split_special_tokens=not prompt)["input_ids"])
            theirs = [int(t) for t in native.encode(text, add_special_tokens=prompt).input_ids.data[0]]
            if ours != theirs:
                mismatches += 1
                if not detail:
                    i = _first_difference(ours, theirs)
                    detail = (f"first at {text[:40]!r} ({'as a prompt' if prompt else 'as text'}): token {i}: "
                              f"ours {ours[i:i + 4]}, OpenVINO's {theirs[i:i + 4]}")
        ids = hf(text, add_special_tokens=False)["input_ids"]
        if native.decode(ids, skip_special_tokens=False) != text:
            round_trips += 1
            if not detail:
                detail = f"OpenVINO's decode(encode({text[:40]!r})) does not give the text back"
    return TokenizerCheck(
        model=what, scored_with=scored_with, reference="openvino-tokenizers' conversion (what openvino-genai serves "
        "with)", samples=2 * len(SAMPLE), mismatches=mismatches, round_trip_failures=round_trips,
        result="agrees" if not mismatches and not round_trips else "disagrees", detail=detail,
        seconds=round(time.perf_counter() - started, 3))


def load(folder: Path, what: str):
    """-> (the HF tokenizer optkit scores with, [TokenizerCheck], why openvino-genai cannot serve it or None)."""
    import transformers
    from transformers import AutoTokenizer

    from optkit.engines.openvino.export import marker

    hf = AutoTokenizer.from_pretrained(folder)
    scored_with = f"transformers {transformers.__version__}'s tokenizer on {Path(folder).name}"
    if not (Path(folder) / "openvino_tokenizer.xml").is_file():
        why = marker(folder).get("genai_tokenizer_problem") or "the folder has no openvino_tokenizer.xml"
        why = f"openvino-tokenizers could not convert its tokenizer: {why}"
        check = TokenizerCheck(model=what, scored_with=scored_with, reference="openvino-tokenizers", samples=0,
                               mismatches=0, round_trip_failures=0, result="skipped", detail=why)
        return hf, [check], why
    import openvino_genai

    check = compare(hf, openvino_genai.Tokenizer(str(folder)), what, scored_with)
    if check.result != "agrees":
        failing = check.mismatches + check.round_trip_failures
        raise BadInput(f"OpenVINO's tokenizer for {what} disagrees with the one optkit scores it with on {failing} of "
                       f"{check.samples} samples, {check.detail}; optkit will not score it in OpenVINO (its ids would "
                       "not be the served model's): use engine: torch, or report it with the tokenizer's type")
    return hf, [check], None
