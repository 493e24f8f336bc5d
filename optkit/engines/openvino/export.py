"""HF folder -> OpenVINO IR (optimum-intel), with NNCF weight compression when asked; runs in the OpenVINO
environment (the engine's load, and ov.compress through `python -m optkit.engines.openvino.export`).

An export is cached under OPTKIT_CACHE/openvino, keyed by the source folder's content hash, the compression asked
for and the versions of the libraries that write it, so a changed model or a new optimum-intel exports again. The
float export keeps float32 weights (optimum-intel would otherwise compress a model over 1B weights to int8 by
default). The tokenizer is converted here, not by optimum-intel's exporter, which skips a tokenizer it cannot convert
without a word (GGUF-derived byte-level BPE): the reason is kept in the folder's marker, and the engine then serves
through OVModelForCausalLM instead of openvino-genai, saying so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict

MARK = "optkit-openvino.json"  # written last into an IR folder optkit exported: what it holds
XML = "openvino_model.xml"
VERSIONED = ("openvino", "openvino-tokenizers", "openvino-genai", "optimum-intel", "nncf", "transformers")


class Compression(BaseModel):
    """NNCF weight compression, as ov.compress's params give it (None: float32 weights)."""

    model_config = ConfigDict(extra="forbid")
    bits: int = 8
    group_size: int = -1  # -1: per output channel
    sym: bool = False
    ratio: float = 1.0  # share of the compressed layers in `bits` (int4); the rest int8
    awq: bool = False
    scale_estimation: bool = False
    texts: list[str] = []  # calibration texts for the data-aware options


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def cache_key(source: Path, compression: Compression | None) -> str:
    from optkit.checkpoints import content_hash

    what = {"source": content_hash(str(source)), "compression": compression and compression.model_dump(),
            "versions": versions()}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]


def exported(source: Path, compression: Compression | None = None) -> Path:
    """The IR folder of an HF folder (cached); exported now if it is not there."""
    from optkit.files import cache_dir

    out = cache_dir() / "openvino" / cache_key(source, compression)
    if (out / MARK).is_file():
        return out
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(source, tmp, compression)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def _quantization(compression: Compression, source: Path):
    from optimum.intel import OVWeightQuantizationConfig

    data = bool(compression.awq or compression.scale_estimation)
    return OVWeightQuantizationConfig(
        bits=compression.bits, sym=compression.sym, group_size=compression.group_size, ratio=compression.ratio,
        quant_method="awq" if compression.awq else "default", scale_estimation=compression.scale_estimation or None,
        dataset=list(compression.texts) if data else None, num_samples=len(compression.texts) if data else None,
        tokenizer=str(source) if data else None)


def write(source: Path, out: Path, compression: Compression | None = None) -> dict:
    """Export `source` (an HF folder) into `out`: IR, config, HF tokenizer files, the OpenVINO tokenizer where it
    converts, and the marker (written last). -> the marker's contents."""
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    options = {"quantization_config": _quantization(compression, source)} if compression else {"load_in_8bit": False}
    model = OVModelForCausalLM.from_pretrained(source, export=True, compile=False, **options)
    model.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.save_pretrained(out)
    why = convert_tokenizer(tokenizer, out)
    kinds, compressed = weights(out / XML)
    mark = {"source": str(source), "compression": compression and compression.model_dump(exclude={"texts"}),
            "calibration_texts": len(compression.texts) if compression else 0, "versions": versions(),
            "genai_tokenizer": why is None, "genai_tokenizer_problem": why, "weight_types": kinds,
            "compressed": compressed}
    (out / MARK).write_text(json.dumps(mark, indent=1))
    return mark


def weights(xml: Path) -> tuple[dict[str, int], list[str]]:
    """The IR's weight constants: how many values of each element type, and the names of the integer ones of
    two or more dimensions (what NNCF compressed)."""
    import openvino as ov

    kinds, compressed = {}, []
    for op in ov.Core().read_model(xml).get_ops():
        if op.get_type_name() != "Constant":
            continue
        kind, shape = op.get_output_element_type(0).get_type_name(), list(op.get_output_shape(0))
        count = 1
        for d in shape:
            count *= d
        kinds[kind] = kinds.get(kind, 0) + count
        name = op.get_friendly_name()
        if kind in ("u8", "i8", "u4", "i4") and len(shape) >= 2 and "/" not in name:  # not its zero points
            compressed.append(name)
    return kinds, compressed


def convert_tokenizer(tokenizer, out: Path) -> str | None:
    """openvino-tokenizers' conversion (what openvino-genai serves with) into `out`; None, or why it failed."""
    import openvino as ov

    try:
        from openvino_tokenizers import convert_tokenizer as convert

        tok, detok = convert(tokenizer, with_detokenizer=True)
        ov.save_model(tok, out / "openvino_tokenizer.xml")
        ov.save_model(detok, out / "openvino_detokenizer.xml")
    except Exception as exc:  # noqa: BLE001 - any conversion failure means: no openvino-genai for this model
        for name in ("openvino_tokenizer", "openvino_detokenizer"):
            for suffix in (".xml", ".bin"):
                (out / (name + suffix)).unlink(missing_ok=True)
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return None


def marker(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / MARK).read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str]) -> int:
    """python -m optkit.engines.openvino.export SOURCE OUT COMPRESSION_JSON: ov.compress's worker side."""
    from optkit.errors import OptkitError

    source, out, options = Path(argv[0]), Path(argv[1]), json.loads(argv[2])
    try:
        with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress to the log; stdout carries the marker
            folder = exported(source, Compression(**options))
    except OptkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    shutil.copytree(folder, out, dirs_exist_ok=True)
    print(json.dumps(marker(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
