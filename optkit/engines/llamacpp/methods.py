"""llama.cpp's methods: gguf.export writes a float PyTorch model as a GGUF file with llama.cpp's own converter and
checks llama.cpp's logits on it against PyTorch's; gguf.quantize runs llama.cpp's quantizer (llama_model_quantize)
on a GGUF, with the quant types named as llama.cpp names them (Q4_K_M, Q8_0, IQ4_NL, ...), an importance matrix
from calibration text, and include/exclude as per-tensor type overrides. Both end in the llama.cpp engine.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from optkit.calibration import CalibrationSpec
from optkit.engines.method import Method, ModelInfo, Params, step_record
from optkit.errors import RunError
from optkit.progress import note

OUTTYPE = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
# (max |logit diff| as a share of the largest |logit|, least top-1 agreement): llama.cpp keeps its KV cache in
# f16, so even f32 weights do not match PyTorch to the last bit; lower-precision files move further
TOLERANCE = {"f32": (0.01, 0.95), "f16": (0.02, 0.9), "bf16": (0.05, 0.85), "q8_0": (0.08, 0.8)}
# file types llama_model_quantize refuses without an importance matrix (llama-quantize says the same)
NEEDS_IMATRIX = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "Q2_K_S"}


def _scratch(out_dir: str | None):
    """(folder, owner): out_dir as given, or a temporary folder the new model owns (it goes with the model)."""
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return Path(out_dir), None
    owner = tempfile.TemporaryDirectory(prefix="optkit-gguf-")
    return Path(owner.name), owner


class ExportParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outtype: Literal["f32", "f16", "bf16", "q8_0"] | None = Field(
        default=None, description="the converter's --outtype; default: the model's dtype (float32 -> f32, ...)")
    rtol: float | None = Field(default=None, ge=0, description="allowed max |torch - llama.cpp| logit difference as "
                               "a share of the largest |logit|; default by outtype (f32 0.01 ... q8_0 0.08)")
    min_top1: float | None = Field(default=None, ge=0, le=1, description="least share of positions with the same "
                                   "argmax; default by outtype (f32 0.95 ... q8_0 0.8)")
    out_dir: str | None = Field(default=None, description="write the .gguf here; default: a temp folder (a run "
                                "keeps the final file in its artifacts/)")


class Export(Method):
    name = "gguf.export"
    Params = ExportParams
    accepts = ("hf",)
    produces = "gguf"
    devices = ("cpu", "cuda")
    requires = ("llama_cpp",)
    extra = "llamacpp"

    def bytes_per_weight(self, params: ExportParams, in_features, act_bytes):
        if params.outtype == "q8_0" and in_features % 32:
            return 2.0  # the converter writes rows Q8_0's 32-weight blocks do not divide in F16
        return {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, None: None}[params.outtype]

    def forecast_targets(self, linears: list[str], params: ExportParams) -> list[str]:
        return linears  # the converter writes every weight in the outtype; there is no include/exclude

    def check(self, info: ModelInfo, params: ExportParams) -> list[str]:
        from optkit.engines.llamacpp.tools import converter_dir
        from optkit.errors import BadInput

        problems = super().check(info, params)
        if not problems and info.dtype not in OUTTYPE:
            problems.append(f"exports float32, bfloat16 or float16 models (model is {info.dtype})")
        try:
            converter_dir()
        except BadInput as exc:
            problems.append(str(exc))
        return problems

    def apply(self, lm, params: ExportParams, auto_exclude=None):
        from optkit import registry
        from optkit.common.validation import validate
        from optkit.engines.llamacpp import vocab
        from optkit.engines.llamacpp.tools import convert

        started = time.perf_counter()
        outtype = params.outtype or OUTTYPE[lm.dtype]
        folder, owner = _scratch(params.out_dir)
        with tempfile.TemporaryDirectory(prefix="optkit-hf-") as hf:
            note("gguf.export: saving the model as an HF folder")
            lm.model.save_pretrained(hf)
            lm.tokenizer.save_pretrained(hf)
            note(f"gguf.export: llama.cpp's converter, --outtype {outtype}")
            path = convert(Path(hf), folder / f"model-{outtype}.gguf", outtype)
        new = registry.engines.get("llamacpp").open(path, like=lm, owner=owner)
        # the vocabulary the converter wrote must tokenize as the model's own tokenizer does, or the two engines
        # would score different ids
        agreed = vocab.check(lm.tokenizer, new.tokenizer, path.name, "the exported model's own tokenizer")
        if agreed.result != "agrees":
            raise RunError(vocab.refusal(agreed, path))
        new.tokenizer_checks = [*lm.tokenizer_checks, *new.tokenizer_checks, agreed]
        note("gguf.export: validating llama.cpp's logits against PyTorch's")
        rtol, top1 = TOLERANCE[outtype]
        tolerance = ExportTolerance(atol=0.0, rtol=params.rtol if params.rtol is not None else rtol,
                                    min_top1=params.min_top1 if params.min_top1 is not None else top1)
        check = validate(lm, new, tolerance, what=f"GGUF export ({outtype})")
        return new, step_record(self, params, started, ["<whole model>"], details={
            "file": str(path), "outtype": outtype, "size_bytes": new.size_bytes(), "validation": check,
            "tokenizer_check": agreed.model_dump()})


class ExportTolerance(BaseModel):
    """What common.validation.validate reads: |diff| <= atol + rtol * max|logit|, and top-1 agreement."""

    atol: float
    rtol: float
    min_top1: float


class QuantizeParams(Params):
    """include / exclude: regexes on GGUF tensor names (blk.0.attn_v.weight, output.weight, ...)."""

    type: str = Field(description="llama.cpp's quant type: Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, IQ4_NL, ... (any "
                      "file type the installed llama.cpp lists)")
    imatrix: CalibrationSpec | None = Field(default=None, description="compute an importance matrix on this "
                                            "calibration text (default WikiText-2 validation) and quantize with it")
    keep_type: str | None = Field(default=None, description="type of tensors include/exclude leave out; default: "
                                  "as in the source file")
    tensor_types: dict[str, str] = Field(default_factory=dict, description="regex on tensor names -> type, as "
                                         "llama-quantize --tensor-type")
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    allow_requantize: bool = Field(default=False, description="quantize a file that is already quantized (worse "
                                   "than from a float file, as llama-quantize warns)")
    pure: bool = Field(default=False, description="every tensor in `type`, no llama.cpp per-tensor mix")
    out_dir: str | None = None

    @field_validator("type", "keep_type", "output_tensor_type", "token_embedding_type")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value else value


class Quantize(Method):
    name = "gguf.quantize"
    Params = QuantizeParams
    accepts = ("gguf",)
    produces = "gguf"
    devices = ("cpu", "cuda")
    requires = ("llama_cpp",)
    extra = "llamacpp"

    def bytes_per_weight(self, params: QuantizeParams, in_features, act_bytes):
        from gguf.constants import GGML_QUANT_SIZES

        from optkit.engines.llamacpp.quant import fitted_type

        kind = fitted_type(params.type, in_features)  # llama.cpp's per-tensor fallback included
        if kind is None:
            return None
        block, size = GGML_QUANT_SIZES[kind]
        return size / block

    def check(self, info: ModelInfo, params: QuantizeParams) -> list[str]:
        from optkit.engines.llamacpp.quant import file_types, tensor_type_names

        problems = super().check(info, params)
        known, types = file_types(), tensor_type_names()
        if params.type not in known:
            problems.append(f"quant type {params.type!r} is not one the installed llama.cpp knows; use one of "
                            f"{', '.join(known)}")
        wrong = [t for t in (params.keep_type, params.output_tensor_type, params.token_embedding_type,
                             *params.tensor_types.values()) if t and t not in types]
        if wrong:
            problems.append(f"tensor type {wrong[0]!r} is not a ggml type; use one of {', '.join(types)}")
        head = next((shape for name, shape in info.linears.items() if name.split(".")[-1] == "lm_head"), None)
        if head:  # token_embd and output rows are hidden-size wide (GGUF as shipped: checked on its header)
            from optkit.engines.llamacpp.quant import misfit

            problem = misfit(params, {"token_embd.weight": head[1], "output.weight": head[1]})
            if problem:
                problems.append(problem)
        if params.type in NEEDS_IMATRIX and params.imatrix is None:
            problems.append(f"{params.type} needs an importance matrix; add params.imatrix: {{}} (calibration text, "
                            "default WikiText-2 validation)")
        if params.imatrix is not None:
            from optkit.engines.llamacpp.tools import imatrix_supported

            if not imatrix_supported():
                problems.append("this llama.cpp's tensor layout is not the one optkit reads an imatrix through; "
                                "remove params.imatrix")
        return problems

    def apply(self, lm, params: QuantizeParams, auto_exclude=None):
        from optkit import registry
        from optkit.engines.llamacpp.quant import quantize

        started = time.perf_counter()
        folder, owner = _scratch(params.out_dir)
        path = folder / f"model-{params.type}.gguf"
        details = quantize(lm, path, params)
        new = registry.engines.get("llamacpp").open(path, like=lm, owner=owner)
        details.update(file=str(path), size_bytes=new.size_bytes())
        return new, step_record(self, params, started, details.pop("changed"), details.pop("skipped"),
                                details=details)
