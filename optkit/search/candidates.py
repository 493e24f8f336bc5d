"""What optkit search tries, as recipe variants any run can rebuild: the source as it is, llama.cpp's uniform types
(with and without an importance matrix), the mixes the sensitivity table suggests, and a recipe's own variants;
and the forecast of each: bytes read per decoded token, from the source's tensor shapes and the types the candidate
gives them, and the bound that puts on decode speed.

From a quantized GGUF source a candidate is requantized from the file itself (allow_requantize): llama.cpp
dequantizes each tensor first, which gives the same values an f32 export of that file would hold, without an
export (minutes) and with the source's own tokenizer metadata. From a float checkpoint gguf.export comes first.
"""

from __future__ import annotations

from collections import Counter

from optkit.recipe import Step, Variant
from optkit.search.mix import Mix
from optkit.search.sensitivity import FLOATS, bytes_per_weight, members, quantize_params
from optkit.searchrecord import SearchCandidate
from optkit.searchspec import SearchSpec

SOURCE = "source"
# uniform formats of the other engines, as recipe steps from a float (PyTorch) model; llm-compressor's schemes are
# left out: no engine here runs compressed-tensors at its serving speed (transformers dequantizes on CPU)
ENGINE_FORMATS = {
    "torch": [("torch-bf16", [{"method": "cast", "params": {"dtype": "bfloat16"}}]),
              ("torch-int4-g32", [{"method": "cast", "params": {"dtype": "bfloat16"}},
                                  {"method": "torchao.int4_weight_only", "params": {"group_size": 32}}]),
              ("torch-dynamic-int8", [{"method": "torch.dynamic_int8"}])],
    "onnxruntime": [("ort-int4", [{"method": "onnx.export"}, {"method": "ort.int4", "params": {"block_size": 32}}]),
                    ("ort-dynamic-int8", [{"method": "onnx.export"}, {"method": "ort.dynamic_int8"}])],
}


def source_variant(ckpt) -> Variant:
    """The file the user started from, as it is, in the engine it runs in (llama.cpp for a GGUF file)."""
    return Variant(name=SOURCE, engine="llamacpp" if ckpt.kind == "gguf" else None)


def prefix(ckpt) -> list[Step]:
    """Steps before gguf.quantize: none for a GGUF file, gguf.export for a float model."""
    return [] if ckpt.kind == "gguf" else [Step(method="gguf.export")]


def _variant(ckpt, name: str, params: dict) -> Variant:
    return Variant(name=name, engine=source_variant(ckpt).engine,
                   steps=[*prefix(ckpt), Step(method="gguf.quantize", params=params)])


def uniform(ckpt, spec: SearchSpec, source_types: dict[str, str]) -> list[Variant]:
    """One variant per uniform type (and per type in imatrix_types, one with an importance matrix); the source's
    own type is skipped where requantizing would only copy the file."""
    from optkit.engines.llamacpp.methods import NEEDS_IMATRIX
    from optkit.engines.llamacpp.quant import main_type

    packed = Counter(t for t in source_types.values() if t not in FLOATS)
    own = packed.most_common(1)[0][0] if packed else None  # the source's main type (its embedding may differ)
    out = []
    for kind in spec.types:
        kind = kind.upper()
        main = main_type(kind)
        if own and main is not None and main.name == own and kind == own:
            continue
        base = {"type": kind, "allow_requantize": bool(packed)}
        if kind not in NEEDS_IMATRIX:
            out.append(_variant(ckpt, kind.lower(), base))
        if kind in [t.upper() for t in spec.imatrix_types] or kind in NEEDS_IMATRIX:
            out.append(_variant(ckpt, f"{kind.lower()}-imatrix", {**base, "imatrix": spec.imatrix.model_dump()}))
    return out


def other_engines(spec: SearchSpec) -> list[Variant]:
    """The uniform formats of the engines besides llama.cpp the search may use (PyTorch, ONNX Runtime), each from
    the source as PyTorch loads it (a GGUF file: its dequantized copy)."""
    return [Variant(name=name, steps=[Step.model_validate(st) for st in steps])
            for engine in spec.engines if engine != "llamacpp" for name, steps in ENGINE_FORMATS[engine]]


def mixed(ckpt, spec: SearchSpec, mix: Mix, low: str, source_types: dict[str, str], keep: str | None) -> Variant:
    """keep: the type the other groups stay in, as the sensitivity job measured them (None: as in the source)."""
    requantize = any(t not in FLOATS for t in source_types.values())
    params = quantize_params(low, mix.patterns, keep, requantize, spec.imatrix if spec.mixes.imatrix else None)
    return _variant(ckpt, mix.name, params)


def tensor_types(variant: Variant, source_types: dict[str, str], widths: dict[str, int]) -> dict[str, str]:
    """The type each tensor would get (a forecast: llama.cpp's own mix rules for *_M types are not modelled; its
    per-tensor fallback for rows a type's blocks do not divide is)."""
    from optkit.engines.llamacpp.quant import fitted_type

    step = next((s for s in variant.steps if s.method == "gguf.quantize"), None)
    if step is None:
        return dict(source_types)
    p = step.params
    out = {}
    output = "output.weight" if "output.weight" in source_types else "token_embd.weight"  # tied: the embedding
    moved = set(members(p["include"][0], source_types)) if p.get("include") else None
    for name, kind in source_types.items():
        if name.endswith("norm.weight") or kind == "F32" and widths.get(name, 0) < 2:
            out[name] = kind
        elif moved is not None and name not in moved:
            out[name] = p.get("keep_type") or kind
        elif moved is None and name == output and p["type"] not in ("Q8_0", *FLOATS):
            out[name] = fitted_type("Q6_K", widths.get(name, 0)).name  # llama.cpp's rule for the output matrix
        else:
            fitted = fitted_type(p["type"], widths.get(name, 0))
            out[name] = fitted.name if fitted is not None else kind
    return out


def bytes_per_token(types: dict[str, str], sizes: dict[str, int]) -> float:
    """Weight bytes read per decoded token: every matrix once; the token embedding one row, unless it is also
    the output matrix (tied: no output.weight), then all of it."""
    total = 0.0
    for name, kind in types.items():
        if "norm" in name or (name == "token_embd.weight" and "output.weight" in types):
            continue
        total += sizes[name] * bytes_per_weight(kind)
    return total


def record(variant: Variant, kind: str, **facts) -> SearchCandidate:
    return SearchCandidate(name=variant.name, kind=kind, engine=variant.engine,
                           steps=[s.model_dump() for s in variant.steps], stage="forecast", **facts)
