"""The tokenizer an OpenVINO model is scored and served with. optkit scores with the folder's Hugging Face tokenizer
(the same tokenizer.json optkit's environment reads, through the same tokenizers library); openvino-genai serves
with the OpenVINO tokenizer converted from it (export.py). Where that conversion exists the two are held together on
the fixed sample (ids as text and as a prompt, and decode back): openvino-genai decodes the benchmark only when they
agree. Where they disagree (SmolLM2's GGUF-derived byte-level BPE: emoji and symbols split differently) or the
conversion failed, the check is recorded (disagrees / skipped, with the first difference or why) and decoding goes
through OVModelForCausalLM with the model's own tokenizer, so no number optkit reports comes from other ids. A
folder whose HF tokenizer does not load is refused with one line.
"""

from __future__ import annotations

import time
from pathlib import Path

from optkit.common.sample import SAMPLE, id_mismatches
from optkit.errors import BadInput
from optkit.results import TokenizerCheck


def compare(hf, native, what: str, scored_with: str) -> TokenizerCheck:
    """hf: a transformers tokenizer; native: openvino_genai.Tokenizer."""
    started = time.perf_counter()
    mismatches, round_trips, detail = 0, 0, ""
    for text in SAMPLE:
        missed, first = id_mismatches(
            text,
            lambda t, prompt: list(hf(t, add_special_tokens=prompt, split_special_tokens=not prompt)["input_ids"]),
            lambda t, prompt: [int(i) for i in native.encode(t, add_special_tokens=prompt).input_ids.data[0]],
            "OpenVINO's")
        mismatches, detail = mismatches + missed, detail or first
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

    try:
        hf = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 - any library failure: the folder's tokenizer is unusable here
        raise BadInput(f"{what}: its tokenizer does not load in OpenVINO's environment (transformers "
                       f"{transformers.__version__}: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}); "
                       "use engine: torch") from None
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
        return hf, [check], (f"openvino-tokenizers' conversion disagrees with the model's tokenizer on {failing} of "
                             f"{check.samples} samples, {check.detail}")
    return hf, [check], None
