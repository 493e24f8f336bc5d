"""gguf.quantize's work: llama_model_quantize with its parameters filled from the step's (file type, per-tensor
type overrides for include/exclude and tensor_types, output and token-embedding types, an importance matrix
computed on calibration text), and what changed, read back from the two files' headers."""

from __future__ import annotations

import ctypes
import os
import re
import time
from collections import Counter

from optkit.errors import RunError
from optkit.progress import note
from optkit.results import SkippedModule

FLOATS = ("F32", "F16", "BF16")


def file_types() -> list[str]:
    """The quant types the installed llama.cpp lists (LLAMA_FTYPE_*), in its order, named as llama-quantize
    names them."""
    import llama_cpp

    names = {n: getattr(llama_cpp, n) for n in dir(llama_cpp) if n.startswith("LLAMA_FTYPE_")
             and n != "LLAMA_FTYPE_GUESSED"}
    return [n.removeprefix("LLAMA_FTYPE_MOSTLY_").removeprefix("LLAMA_FTYPE_ALL_")
            for n, _ in sorted(names.items(), key=lambda kv: kv[1])]


def _ftype(name: str) -> int:
    import llama_cpp

    return getattr(llama_cpp, "LLAMA_FTYPE_ALL_F32" if name == "F32" else f"LLAMA_FTYPE_MOSTLY_{name}")


def tensor_type_names() -> list[str]:
    import llama_cpp

    return sorted(n.removeprefix("GGML_TYPE_") for n in dir(llama_cpp) if n.startswith("GGML_TYPE_")
                  and n != "GGML_TYPE_COUNT")


def compute_imatrix(lm, spec) -> tuple[dict, dict]:
    """Mean squared activation per input column of every layer weight, over the calibration windows run through
    llama.cpp (the file being quantized, as llama-imatrix does). Kept under $OPTKIT_CACHE/imatrix, keyed by the
    file (path, size, mtime) and the calibration spec: optkit search quantizes one source with it dozens of times."""
    import hashlib
    import json

    import numpy as np

    from optkit.files import cache_dir

    st = lm.path.stat()
    key = hashlib.sha256(json.dumps([str(lm.path.resolve()), st.st_size, st.st_mtime_ns, spec.model_dump()],
                                    sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir() / "imatrix" / f"{key}.npz"
    if path.is_file():
        with np.load(path) as saved:
            data = {k: saved[k] for k in saved.files if k != "__facts__"}
            facts = json.loads(str(saved["__facts__"]))
        return data, {**facts, "cached": True}
    data, facts = _collect_imatrix(lm, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez(tmp, __facts__=np.array(json.dumps(facts)), **data)
    os.replace(tmp, path)
    return data, facts


def _collect_imatrix(lm, spec) -> tuple[dict, dict]:
    from optkit.calibration import calibration_batch
    from optkit.engines.llamacpp.tools import Imatrix

    started = time.perf_counter()
    windows = calibration_batch(lm, spec)
    collector = Imatrix()
    lm.watch(collector.callback)
    try:
        for i, row in enumerate(windows, 1):
            note(f"gguf.quantize: imatrix window {i}/{len(windows)}")
            lm.start(row[None])
    finally:
        lm.watch(None)
    data = collector.result()
    seconds = round(time.perf_counter() - started, 1)
    return data, {"tensors": len(data), "tokens": int(windows.numel()), "seconds": seconds}


# types a row of any width that is a multiple of 32 takes, best first (what a misfit is pointed to)
COMMON = ("Q8_0", "Q6_K", "Q5_K", "Q5_1", "Q5_0", "Q4_K", "Q4_1", "Q4_0", "IQ4_NL", "F16")


def main_type(kind: str):
    """The ggml tensor type (gguf's GGMLQuantizationType) a llama.cpp type is named after: itself for a tensor type
    (Q8_0, IQ1_S), its base for a file type's mix (Q4_K_M -> Q4_K); None when there is none (IQ2_M)."""
    from gguf.constants import GGMLQuantizationType

    members = GGMLQuantizationType.__members__
    return members.get(kind) or members.get(kind.removesuffix("_M").removesuffix("_S").removesuffix("_L"))


def block_size(kind: str) -> int:
    """Weights per block of a ggml tensor type (32 for Q4_0, 256 for the K types)."""
    from gguf.constants import GGML_QUANT_SIZES

    return GGML_QUANT_SIZES[main_type(kind)][0]


# llama.cpp's tensor_type_fallback (src/llama-quant.cpp): the type a tensor gets instead of a file type's main type
# when its rows do not fit that type's blocks (F16 when the fallback does not fit either)
FALLBACK = {**dict.fromkeys(("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"), "IQ4_NL"),
            **dict.fromkeys(("Q2_K", "Q3_K", "TQ1_0", "TQ2_0"), "Q4_0"), "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def fitted_type(kind: str, width: int):
    """The ggml type llama.cpp stores a tensor with rows of `width` weights in when asked for `kind`: its main type
    where the rows fit its blocks, else llama.cpp's fallback (Q4_K_M on SmolLM2's 576-wide rows: Q5_0). None where
    the name has no main type."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    main = main_type(kind)
    if main is None or width % GGML_QUANT_SIZES[main][0] == 0:
        return main
    other = GGMLQuantizationType[FALLBACK.get(main.name, main.name)]
    return other if width % GGML_QUANT_SIZES[other][0] == 0 else GGMLQuantizationType.F16


def misfit(params, widths: dict[str, int]) -> str | None:
    """token_embedding_type and output_tensor_type are applied as given: llama.cpp skips the fallback it uses
    for other tensors whose rows a type's blocks do not divide, then rejects its own result ("quantized data
    validation failed"). The problem in one line, or None. widths: tensor name -> weights per row."""
    for option, kind, name in (("token_embedding_type", params.token_embedding_type, "token_embd.weight"),
                               ("output_tensor_type", params.output_tensor_type, "output.weight")):
        width = widths.get(name)
        if kind and width and width % block_size(kind):
            fits = [t for t in COMMON if width % block_size(t) == 0]
            return (f"{option} {kind}: {name} has rows of {width} weights, not a multiple of {kind}'s blocks of "
                    f"{block_size(kind)}, and llama.cpp applies this option without a fallback; use one of "
                    f"{', '.join(fits)}")
    return None


def fell_back(kind: str, before: dict[str, str], after: dict[str, str], widths: dict[str, int]) -> str | None:
    """The tensors llama.cpp could not give the file type's main type because their rows do not fit its blocks,
    in one line (None when every tensor fits). On SmolLM2 (rows of 576) "Q4_K_M" is mostly Q5_0: the 256-weight
    K types fall back tensor by tensor, which a type name alone does not tell."""
    main = main_type(kind)
    if main is None:
        return None
    block = block_size(main.name)
    packed = [n for n, t in after.items() if t not in FLOATS]
    moved = {n: after[n] for n in packed if before.get(n) in FLOATS and widths.get(n, 0) % block}
    if not moved:
        return None
    rows = "/".join(str(w) for w in sorted({widths[n] for n in moved}))
    got = ", ".join(f"{c} {t}" for t, c in Counter(moved.values()).most_common())
    return (f"{len(moved)} of {len(packed)} quantized tensors have rows of {rows} weights, which {main.name}'s blocks "
            f"of {block} do not divide: llama.cpp gave them {got}")


def _overrides(names: dict[str, str], params) -> tuple[dict[str, str], list[SkippedModule]]:
    """regex -> type: the step's tensor_types, and each tensor include/exclude leaves out pinned to keep_type
    (default: its type in the source file)."""
    from optkit.engines.method import select

    overrides = dict(params.tensor_types)
    skipped = []
    if params.include or params.exclude:
        chosen = set(select(list(names), params)[0])
        for name, kind in names.items():
            if name not in chosen:
                keep = params.keep_type or kind
                overrides[f"^{re.escape(name)}$"] = keep
                skipped.append(SkippedModule(module=name, reason=f"left out by include/exclude, kept as {keep}"))
    return overrides, skipped


def _params(params, threads: int, overrides: dict[str, str], imatrix: dict | None, keep: list):
    """llama_model_quantize_params; `keep` holds the ctypes buffers the call reads (they must outlive it)."""
    import llama_cpp as lib
    import numpy as np

    p = lib.llama_model_quantize_default_params()
    p.nthread, p.ftype = threads, _ftype(params.type)
    p.allow_requantize, p.pure = params.allow_requantize, params.pure
    if params.output_tensor_type:
        p.output_tensor_type = getattr(lib, f"GGML_TYPE_{params.output_tensor_type}")
    if params.token_embedding_type:
        p.token_embedding_type = getattr(lib, f"GGML_TYPE_{params.token_embedding_type}")
    if overrides:
        arr = (lib.llama_model_tensor_override * (len(overrides) + 1))()  # ends with a NULL pattern
        for i, (pattern, kind) in enumerate(overrides.items()):
            arr[i].pattern, arr[i].type = pattern.encode(), getattr(lib, f"GGML_TYPE_{kind}")
        p.tt_overrides = ctypes.cast(arr, ctypes.POINTER(lib.llama_model_tensor_override))
        keep.append(arr)
    if imatrix:
        arr = (lib.llama_model_imatrix_data * (len(imatrix) + 1))()  # ends with a NULL name
        for i, (name, values) in enumerate(imatrix.items()):
            values = np.ascontiguousarray(values, dtype=np.float32)
            keep.append(values)
            arr[i].name, arr[i].size = name.encode(), values.size
            arr[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        p.imatrix = ctypes.cast(arr, ctypes.POINTER(lib.llama_model_imatrix_data))
        keep.append(arr)
    return p


def quantize(lm, dst, params) -> dict:
    """Write `dst` from lm's GGUF; the step's details, with "changed" (tensors whose type changed) and "skipped"."""
    from optkit.engines.llamacpp.lib import last_error, library
    from optkit.gguf_header import read

    library()  # loaded (it is, with lm), and with the environment it needs
    header = read(lm.path)
    source = header.tensor_types
    packed = sorted({t for t in source.values() if t not in FLOATS})
    if packed and not params.allow_requantize:
        raise RunError(f"gguf.quantize: {lm.path.name} is already quantized ({', '.join(packed)}); quantize from a "
                       "float GGUF (gguf.export from the float model) or set allow_requantize: true")
    problem = misfit(params, header.row_widths)
    if problem:
        raise RunError(f"gguf.quantize: {problem}")
    details = {"type": params.type, "source_types": dict(Counter(source.values()))}
    imatrix = None
    if params.imatrix is not None:
        imatrix, details["imatrix"] = compute_imatrix(lm, params.imatrix)
    overrides, skipped = _overrides(source, params)
    keep: list = []
    qparams = _params(params, lm.threads, overrides, imatrix, keep)
    note(f"gguf.quantize: llama_model_quantize to {params.type}")
    code = library().llama_model_quantize(os.fsencode(str(lm.path)), os.fsencode(str(dst)), ctypes.byref(qparams))
    if code != 0:
        raise RunError(f"llama_model_quantize to {params.type} failed ({code}): {last_error()}")
    after = read(dst).tensor_types
    details["types"] = dict(Counter(after.values()))
    fallback = fell_back(params.type, source, after, header.row_widths)
    if fallback:
        details["fallback"] = fallback
    details["requantized"] = bool(packed)
    details["changed"] = [n for n, t in after.items() if source.get(n) != t]
    details["skipped"] = skipped
    return details
