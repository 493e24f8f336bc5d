"""Non-finite numbers are data, not crashes. A diverged variant's NaN perplexity or a zero-time sample's
infinite rate is written to report.json as the JSON string "NaN", "Infinity" or "-Infinity" (JSON has no such
numbers; pydantic's default wrote null, which the parent then failed to read back), read back as the float,
shown as nan / inf in text and HTML, and fails the variant's gates.

Weights are different: a checkpoint with NaN or infinite weights is bad input, found before any variant runs
(`nonfinite_weights`, from the safetensors bytes by IEEE 754 bit patterns, so no framework is needed)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, WithJsonSchema

NONFINITE = ["NaN", "Infinity", "-Infinity"]
# a float field of report.json: a JSON number, or one of the three strings above
Num = Annotated[float, WithJsonSchema({"anyOf": [{"type": "number"}, {"enum": NONFINITE}]})]


class Data(BaseModel):
    """Base of every model written to report.json: non-finite floats as strings, never null."""

    model_config = ConfigDict(ser_json_inf_nan="strings")


def nonfinite(model: BaseModel, path: str = "") -> list[str]:
    """Where `model` holds a non-finite float ("accuracy[0].value = nan"), through nested models and lists;
    free-form dicts (details, params) are not searched."""
    out = []
    for name in type(model).model_fields:
        out += _walk(getattr(model, name), f"{path}{name}")
    return out


def _walk(value, path: str) -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path} = {value}"]
    if isinstance(value, BaseModel):
        return nonfinite(value, path + ".")
    if isinstance(value, list):
        return [hit for i, item in enumerate(value) for hit in _walk(item, f"{path}[{i}]")]
    return []


# safetensors dtype -> (element bytes, struct code of an unsigned int that holds it, exponent mask): a value is
# NaN or infinite exactly when all its exponent bits are set (IEEE 754; bfloat16 is float32's top half)
FLOATS = {"F64": (8, "Q", 0x7FF0000000000000), "F32": (4, "I", 0x7F800000), "F16": (2, "H", 0x7C00),
          "BF16": (2, "H", 0x7F80)}
CHUNK = 1 << 24


def nonfinite_weights(path: Path) -> tuple[str, int] | None:
    """(tensor name, count of NaN/inf values) of the first tensor of a .safetensors file holding any, or None.
    Reads the file once, in chunks (numpy where installed, else struct)."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        head = fh.read(8)
        if len(head) < 8:
            return None
        n = struct.unpack("<Q", head)[0]
        if n > size - 8:
            return None  # not a safetensors file optkit can read; the loader will say so
        try:
            header = json.loads(fh.read(n))
        except (ValueError, RecursionError):
            return None
        if not isinstance(header, dict):
            return None
        for name, info in sorted(header.items(), key=lambda kv: _start(kv[1])):
            if not isinstance(info, dict) or info.get("dtype") not in FLOATS:
                continue
            offsets = info.get("data_offsets")
            if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
                continue
            bad = _count(fh, 8 + n + offsets[0], offsets[1] - offsets[0], FLOATS[info["dtype"]])
            if bad:
                return name, bad
    return None


def _start(info) -> int:
    offsets = info.get("data_offsets") if isinstance(info, dict) else None
    return offsets[0] if isinstance(offsets, list) and offsets and isinstance(offsets[0], int) else 0


def _count(fh, start: int, length: int, kind: tuple[int, str, int]) -> int:
    width, code, mask = kind
    fh.seek(start)
    bad, left = 0, max(length, 0) // width * width
    try:
        import numpy as np

        dtype = np.dtype(f"<u{width}")
    except ImportError:
        np = None
    while left > 0:
        chunk = fh.read(min(CHUNK, left))
        if not chunk:
            break
        left -= len(chunk)
        chunk = chunk[: len(chunk) // width * width]
        if np is not None:
            bad += int(np.count_nonzero((np.frombuffer(chunk, dtype=dtype) & mask) == mask))
        else:
            bad += sum(1 for (v,) in struct.iter_unpack("<" + code, chunk) if v & mask == mask)
    return bad


def _finding(hit) -> bool:
    """A remembered finding: [tensor name, count of non-finite values]."""
    return isinstance(hit, list) and len(hit) == 2 and isinstance(hit[0], str) and isinstance(hit[1], int) \
        and not isinstance(hit[1], bool) and hit[1] > 0


def check_weights(location: str) -> None:
    """BadInput naming the file and tensor when a local checkpoint's safetensors hold NaN or infinite weights.
    Each file is read once per (path, size, mtime): the answer is remembered in the cache (finite.json)."""
    from optkit.errors import BadInput
    from optkit.files import atomic_write, cache_dir, read_memo

    folder = Path(location)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return
    memo_path = cache_dir() / "finite.json"
    memo, changed = read_memo(memo_path), False
    try:
        for f in files:
            st = f.stat()
            key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
            hit = memo.get(key)
            if not (hit is None and key in memo) and not _finding(hit):  # not remembered, or not in our shape
                found = nonfinite_weights(f)
                memo[key], changed = (list(found) if found else None), True
                hit = memo[key]
            if hit is not None:
                name, count = hit
                raise BadInput(f"{f}: tensor {name} holds {count:,} NaN or infinite values, so every number measured "
                               "from it would be meaningless; re-download or re-save the checkpoint (or fix the step "
                               "that wrote it)")
    finally:
        if changed:
            try:
                atomic_write(memo_path, json.dumps(memo))
            except OSError:
                pass  # a read-only cache costs a re-read next time
