"""A GGUF file as a PyTorch (HF safetensors) folder, converted once per file in a process of its own.

The weights are transformers' dequantized reading of the file. The tokenizer is not transformers' (it is not
faithful for every vocabulary type): it is built from the file's metadata (hf_tokenizer.py) and held against
llama.cpp's own on the fixed sample twice, as built and as saved and loaded again, before anything is written
where optkit will find it. A disagreement is refused (exit 2) with the first difference. The folder records the
file it came from, so every later load checks again (check_folder).

`python -m optkit.engines.llamacpp.convert SRC OUT` is the child; its last stdout line is JSON: {"ok": ...} or
{"error": "...", "bad_input": true|false}. The folder name carries the file's content hash, the transformers
version and CONVERSION, so a folder written by other code is never reused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from optkit.errors import BadInput, RunError

CONVERSION = 2  # bump whenever what a converted folder holds changes (2: tokenizer built from the GGUF, checked)
SOURCE = "optkit-source.json"
TIMEOUT_S = 3 * 3600


def folder_for(src: Path) -> Path:
    from importlib.metadata import version

    from optkit.checkpoints import content_hash
    from optkit.files import cache_dir

    return cache_dir() / "gguf" / f"{content_hash(str(src))[:16]}-tf{version('transformers')}-c{CONVERSION}"


def hf_folder(ckpt, say=None):
    """A GGUF checkpoint as its cached safetensors folder for the PyTorch engine (converted once per file, in a
    child process, its tokenizer built from the file and checked against llama.cpp); other checkpoints unchanged."""
    from optkit.checkpoints import Checkpoint

    if ckpt.kind != "gguf":
        return ckpt
    return Checkpoint(ckpt.given, "folder", str(converted(Path(ckpt.location), say)), "hf")


def check_architecture(path: str) -> None:
    """transformers dequantizes GGUF files of the architectures it maps; others are refused before converting."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    from optkit.gguf_header import read

    arch = read(path).architecture
    known = sorted(k for k in GGUF_CONFIG_MAPPING if k not in ("general", "tokenizer"))
    if arch not in GGUF_CONFIG_MAPPING:
        raise BadInput(f"{path}: transformers cannot read GGUF architecture {arch!r} (it reads {', '.join(known)}); "
                       "give the model as an HF folder")


def converted(src: Path, say=None) -> Path:
    """The converted folder of a GGUF file, made now in a child process if it is not cached yet."""
    target = folder_for(src)
    if (target / "config.json").is_file() and (target / SOURCE).is_file():
        if source_of(target) != Path(src):  # the same content at another path: check loads against this one
            from optkit.files import atomic_write

            facts = json.loads((target / SOURCE).read_text())
            atomic_write(target / SOURCE, json.dumps({**facts, "gguf": str(src)}, indent=2))
        return target
    if say:
        say(f"converting {src.name} to a PyTorch folder (once per file; cached in {target.parent})")
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        child = subprocess.run([sys.executable, "-m", "optkit.engines.llamacpp.convert", str(src), str(tmp)],
                               capture_output=True, text=True, timeout=TIMEOUT_S, start_new_session=True)
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RunError(f"converting {src} to PyTorch took over {TIMEOUT_S}s and was stopped") from None
    answer = _answer(child.stdout)
    if answer is None or "error" in answer:
        shutil.rmtree(tmp, ignore_errors=True)
        if answer is None:
            tail = [ln for ln in (child.stderr or "").splitlines() if ln.strip()][-1:] or ["no output"]
            raise RunError(f"converting {src} to PyTorch failed (exit {child.returncode}): {tail[0][:300]}")
        raise (BadInput if answer.get("bad_input") else RunError)(answer["error"])
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race; its folder is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _answer(stdout: str) -> dict | None:
    for line in reversed((stdout or "").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    return None


def source_of(folder: Path) -> Path | None:
    """The GGUF a converted folder came from, or None for any other folder."""
    try:
        return Path(json.loads((Path(folder) / SOURCE).read_text())["gguf"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_tokenizer(folder: Path):
    """A converted folder's tokenizer, built straight from its tokenizer.json: transformers' from_pretrained takes
    4x as long on a large vocabulary (16 s where this takes 4 for Gemma 3's 262,144 tokens and 514,847 merges)."""
    from transformers import PreTrainedTokenizerFast

    config = json.loads((Path(folder) / "tokenizer_config.json").read_text())
    named = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token", "chat_template",
                                    "clean_up_tokenization_spaces") if config.get(k) is not None}
    template = Path(folder) / "chat_template.jinja"
    if "chat_template" not in named and template.is_file():
        named["chat_template"] = template.read_text()
    return PreTrainedTokenizerFast(tokenizer_file=str(Path(folder) / "tokenizer.json"), **named)


def check_folder(folder: Path, tokenizer, what: str):
    """The load-time check of a converted folder's tokenizer against its GGUF (None for other folders);
    BadInput with the refusal line when they disagree."""
    from optkit.engines.llamacpp import vocab

    src = source_of(folder)
    if src is None:
        return None
    result = vocab.check_against_file(tokenizer, src, what, "the HF tokenizer optkit built from the GGUF")
    if result.result == "disagrees":
        raise BadInput(vocab.refusal(result, src))
    return result


def _child(src: Path, out: Path) -> dict:
    from transformers import AutoModelForCausalLM, GgufConfig

    from optkit.engines.llamacpp import hf_tokenizer, vocab

    check_architecture(str(src))
    try:
        tokenizer = hf_tokenizer.build(src)
    except hf_tokenizer.Unsupported as exc:
        raise BadInput(f"{src}: optkit cannot rebuild this file's tokenizer for PyTorch: {exc}; run the file in "
                       "llama.cpp (engine: llamacpp), or give the model's original HF folder") from None
    scored_with = "the HF tokenizer optkit built from the GGUF"
    first = vocab.check_against_file(tokenizer, src, src.name, scored_with)
    if first.result == "disagrees":
        raise BadInput(vocab.refusal(first, src))
    try:  # dequantize=True: otherwise the model keeps a GGUF quantizer and save_pretrained refuses it
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name,
                                                     quantization_config=GgufConfig(dequantize=True))
    except Exception as exc:  # transformers raises many types for unsupported GGUF
        raise RunError(f"cannot convert GGUF {src}: {exc}; check the file is a supported architecture") from exc
    model.save_pretrained(out)  # safetensors only
    tokenizer.save_pretrained(out)
    again = vocab.check_against_file(load_tokenizer(out), src, src.name, scored_with)
    if again.result == "disagrees":  # save_pretrained and a reload can change a tokenizer: check what we will load
        raise BadInput(vocab.refusal(again, src))
    from optkit.checkpoints import content_hash

    (out / SOURCE).write_text(json.dumps({"gguf": str(src), "sha256": content_hash(str(src)),
                                          "conversion": CONVERSION, "tokenizer_check": again.model_dump()}, indent=2))
    return {"ok": True, "tokenizer_check": again.model_dump()}


def main(argv: list[str]) -> int:
    from optkit.errors import OptkitError, quiet_libraries

    quiet_libraries()
    try:
        answer = _child(Path(argv[0]), Path(argv[1]))
    except OptkitError as exc:
        answer = {"error": str(exc), "bad_input": isinstance(exc, BadInput)}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
