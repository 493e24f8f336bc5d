"""What a GGUF file says about itself, read from its header alone (milliseconds, where gguf-py's GGUFReader
builds every metadata array first and takes seconds): magic, version, architecture, tensor count, and whether
the tensor data the header promises is all there. Preflight refuses a file that is not GGUF or is truncated
before any model loads. The layout is GGUF v2/v3 (ggml's gguf.md); type sizes come from the gguf package."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

from optkit.errors import BadInput

# GGUFValueType -> struct format of a scalar (8: string, 9: array are handled apart)
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


@dataclass
class GgufHeader:
    version: int
    architecture: str
    tensors: int
    data_bytes: int  # where the last tensor's data ends, from the start of the file
    file_bytes: int
    metadata: dict = field(default_factory=dict)  # scalar and string values (arrays are skipped unless asked for)
    tensor_types: dict = field(default_factory=dict)  # tensor name -> ggml type name ("F32", "Q4_K", ...)
    row_widths: dict = field(default_factory=dict)  # tensor name -> its first dimension (weights per row)
    shapes: dict = field(default_factory=dict)  # tensor name -> its dimensions, ggml order (row width first)

    @property
    def sizes(self) -> dict:
        """tensor name -> its number of elements (weights)."""
        return {name: math.prod(dims) for name, dims in self.shapes.items()}


class _Reader:
    def __init__(self, fh):
        self.fh = fh

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        data = self.fh.read(size)
        if len(data) < size:
            raise EOFError
        return struct.unpack("<" + fmt, data)[0]

    def string(self) -> str:
        n = self.take("Q")
        data = self.fh.read(n)
        if len(data) < n:
            raise EOFError
        return data.decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool = False):
        if kind == 8:
            return self.string()
        if kind == 9:  # arrays (the tokenizer's vocabulary...) are skipped, not built, unless kept
            inner, n = self.take("I"), self.take("Q")
            if keep:
                return self.array(inner, n)
            if inner in SCALARS:
                self.fh.seek(n * struct.calcsize("<" + SCALARS[inner]), 1)
            elif inner == 8:
                for _ in range(n):
                    self.fh.seek(self.take("Q"), 1)
            else:
                for _ in range(n):
                    self.value(inner)
            return None
        if kind not in SCALARS:
            raise ValueError(f"unknown metadata value type {kind}")
        return self.take(SCALARS[kind])

    def array(self, inner: int, n: int) -> list:
        if inner == 8:
            return [self.string() for _ in range(n)]
        if inner in SCALARS:
            fmt = f"<{n}{SCALARS[inner]}"
            data = self.fh.read(struct.calcsize(fmt))
            if len(data) < struct.calcsize(fmt):
                raise EOFError
            return list(struct.unpack(fmt, data))
        return [self.value(inner, keep=True) for _ in range(n)]


def read(path: str | Path, arrays: tuple[str, ...] = ()) -> GgufHeader:
    """The header of a GGUF file; BadInput (one line, with the fix) when it is not one or is cut short. `arrays`:
    metadata keys whose array values to keep (the tokenizer's tokens, scores, merges...; milliseconds per 100k)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    size = path.stat().st_size
    bad = f"{path} is not a usable GGUF file"
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise BadInput(f"{bad}: it does not start with the GGUF magic; pass a .gguf file written by llama.cpp's "
                           "converter (or an HF folder)")
        r = _Reader(fh)
        try:
            version, tensors, kvs = r.take("I"), r.take("Q"), r.take("Q")
            meta = {}
            for _ in range(kvs):
                key = r.string()
                meta[key] = r.value(r.take("I"), keep=key in arrays)
            end, types, widths, shapes = 0, {}, {}, {}
            for _ in range(tensors):
                name = r.string()
                dims = [r.take("Q") for _ in range(r.take("I"))]
                kind, offset = r.take("I"), r.take("Q")
                types[name] = GGMLQuantizationType(kind).name
                widths[name] = dims[0] if dims else 1
                shapes[name] = dims
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
                count = 1
                for d in dims:
                    count *= d
                end = max(end, offset + count // block * type_size)
            align = int(meta.get("general.alignment") or 32)
            start = -(-fh.tell() // align) * align if tensors else fh.tell()  # no data section to align
        except (EOFError, ValueError, KeyError) as exc:
            why = "the header is cut short" if isinstance(exc, EOFError) else f"the header is damaged ({exc})"
            raise BadInput(f"{bad}: {why}; download or convert it again") from None
    if start + end > size:
        raise BadInput(f"{bad}: it is truncated ({size:,} bytes, its header promises {start + end:,}); download or "
                       "convert it again")
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise BadInput(f"{bad}: its header names no general.architecture; convert it again with llama.cpp's converter")
    return GgufHeader(version, arch, tensors, start + end, size, meta, types, widths, shapes)
