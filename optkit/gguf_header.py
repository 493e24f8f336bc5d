"""What a GGUF file says about itself, read from its header alone (milliseconds, where gguf-py's GGUFReader
builds every metadata array first and takes seconds): magic, version, architecture, tensor count, and whether
the tensor data the header promises is all there. Preflight refuses a file that is not GGUF or is truncated
before any model loads. The layout is GGUF v2/v3 (ggml's gguf.md); type sizes come from the gguf package.

The file is untrusted input: every count and length is checked against the bytes left before it is used (a
length near 2**64 is refused, not allocated), and the header is parsed from a memory map, so a malformed file
costs one BadInput line, never a traceback, a memory blow-up or a loop over billions of phantom entries."""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

from optkit.errors import BadInput

# GGUFValueType -> struct format of a scalar (8: string, 9: array are handled apart)
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
INTEGERS = {0, 1, 2, 3, 4, 5, 10, 11}
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_DEPTH = 8  # arrays of arrays: llama.cpp writes none; a deeper nesting is a crafted file


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


class _Damaged(Exception):
    """The header contradicts itself or the file (the message says how)."""


class _Reader:
    def __init__(self, buf):
        self.buf, self.pos, self.size = buf, 0, len(buf)

    def left(self) -> int:
        return self.size - self.pos

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        if size > self.left():
            raise EOFError
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def count(self, what: str, each: int) -> int:
        """A count of items at least `each` bytes long: refused when the rest of the file cannot hold them."""
        n = self.take("Q")
        if n * each > self.left():
            raise _Damaged(f"{what} {n:,} does not fit in the {self.left():,} bytes left")
        return n

    def skip(self, n: int) -> None:
        if n > self.left():
            raise EOFError
        self.pos += n

    def string(self, what: str = "a string's length") -> str:
        n = self.count(what, 1)
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data.decode("utf-8", errors="replace")

    def _skip_strings(self, n: int) -> None:
        """n length-prefixed strings (a vocabulary: ~100k of them), in a tight loop: this is most of the time."""
        buf, pos, size, unpack = self.buf, self.pos, self.size, struct.Struct("<Q").unpack_from
        for _ in range(n):
            if pos + 8 > size:
                raise EOFError
            pos += 8 + unpack(buf, pos)[0]
        if pos > size:
            raise EOFError
        self.pos = pos

    def value(self, kind: int, depth: int = 0, keep: bool = False):
        if kind == 8:
            return self.string()
        if kind == 9:  # arrays (the tokenizer's vocabulary...) are skipped, not built, unless kept
            if depth >= MAX_DEPTH:
                raise _Damaged(f"arrays nested deeper than {MAX_DEPTH}")
            inner = self.take("I")
            if keep:
                return self.array(inner, depth)
            if inner in SCALARS:
                width = struct.calcsize("<" + SCALARS[inner])
                self.skip(self.count("an array's length", width) * width)
            elif inner == 8:
                self._skip_strings(self.count("an array's length", 8))
            elif inner == 9:
                for _ in range(self.count("an array's length", 12)):
                    self.value(9, depth + 1)
            else:
                raise _Damaged(f"unknown array element type {inner}")
            return None
        if kind not in SCALARS:
            raise _Damaged(f"unknown metadata value type {kind}")
        return self.take(SCALARS[kind])

    def array(self, inner: int, depth: int) -> list:
        """An array's values (its length read here, checked against the bytes left like every count)."""
        if inner == 8:
            return [self.string() for _ in range(self.count("an array's length", 8))]
        if inner in SCALARS:
            width = struct.calcsize("<" + SCALARS[inner])
            n = self.count("an array's length", width)
            values = list(struct.unpack_from(f"<{n}{SCALARS[inner]}", self.buf, self.pos))
            self.pos += n * width
            return values
        if inner == 9:
            return [self.value(9, depth + 1, keep=True) for _ in range(self.count("an array's length", 12))]
        raise _Damaged(f"unknown array element type {inner}")


def _alignment(meta: dict) -> int:
    """general.alignment: a positive power of two stored as an integer (llama.cpp refuses anything else)."""
    value = meta.get("general.alignment", 32)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise _Damaged(f"general.alignment is {value!r}, not a positive power of two")
    return value


def _tensors(r: _Reader, n: int) -> tuple[int, dict, dict, dict]:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    end, types, widths, shapes = 0, {}, {}, {}
    for _ in range(n):
        name = r.string("a tensor name's length")
        n_dims = r.take("I")
        if n_dims > MAX_DIMS:
            raise _Damaged(f"tensor {name!r} has {n_dims:,} dimensions (at most {MAX_DIMS})")
        dims = [r.take("Q") for _ in range(n_dims)]
        kind, offset = r.take("I"), r.take("Q")
        try:
            qtype = GGMLQuantizationType(kind)
            block, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise _Damaged(f"tensor {name!r} has unknown type {kind}") from None
        types[name] = qtype.name
        widths[name] = dims[0] if dims else 1
        shapes[name] = dims
        count = 1
        for d in dims:
            count *= d
        end = max(end, offset + count // block * type_size)
    return end, types, widths, shapes


def _parse(buf, size: int, arrays: tuple[str, ...]) -> GgufHeader:
    r = _Reader(buf)
    r.skip(4)  # the magic, checked by the caller
    version = r.take("I")
    if version not in (2, 3):
        raise _Damaged(f"GGUF version {version} (optkit reads versions 2 and 3)")
    tensors = r.count("the tensor count", 24)  # a name length, a dimension count, a type and an offset at least
    kvs = r.count("the metadata count", 12)  # a key length and a value type at least
    meta = {}
    for _ in range(kvs):
        key = r.string("a metadata key's length")
        meta[key] = r.value(r.take("I"), keep=key in arrays)
    end, types, widths, shapes = _tensors(r, tensors)
    align = _alignment(meta)
    start = -(-r.pos // align) * align if tensors else r.pos  # no data section to align
    return GgufHeader(version, meta.get("general.architecture"), tensors, start + end, size, meta, types, widths,
                      shapes)


def read(path: str | Path, arrays: tuple[str, ...] = ()) -> GgufHeader:
    """The header of a GGUF file; BadInput (one line, with the fix) when it is not one or is cut short. `arrays`:
    metadata keys whose array values to keep (the tokenizer's tokens, scores, merges...; milliseconds per 100k)."""
    path = Path(path)
    bad = f"{path} is not a usable GGUF file"
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            if size < 4:
                head = b""
            else:
                with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                    head = bytes(buf[:4])
                    if head == b"GGUF":
                        header = _parse(buf, size, tuple(arrays))
    except EOFError:
        raise BadInput(f"{bad}: the header is cut short; download or convert it again") from None
    except _Damaged as exc:
        raise BadInput(f"{bad}: the header is damaged ({exc}); download or convert it again") from None
    except (OSError, ValueError) as exc:  # unreadable, or a file mmap cannot map (a FIFO, a special file)
        raise BadInput(f"{bad}: cannot read it ({exc}); pass a regular .gguf file") from None
    if head != b"GGUF":
        raise BadInput(f"{bad}: it does not start with the GGUF magic; pass a .gguf file written by llama.cpp's "
                       "converter (or an HF folder)")
    if header.data_bytes > size:
        raise BadInput(f"{bad}: it is truncated ({size:,} bytes, its header promises {header.data_bytes:,}); "
                       "download or convert it again")
    if not isinstance(header.architecture, str):
        raise BadInput(f"{bad}: its header names no general.architecture; convert it again with llama.cpp's converter")
    return header
