"""Casts: the cheapest variant, and the baseline every quantized variant should beat."""

from __future__ import annotations

from typing import Literal

from optkit.methods.base import Method, ModelInfo, Params


class CastParams(Params):
    dtype: Literal["bfloat16", "float16", "float32"]


class Cast(Method):
    name = "cast"
    Params = CastParams
    linear_only = False
    quantizes = False

    def check(self, info: ModelInfo, params: CastParams) -> list[str]:
        problems = []
        if params.include or params.exclude:
            problems.append("cast applies to the whole model; remove include/exclude")
        if info.quantized:
            problems.append("cast after a quantization step would undo or break it; put cast first")
        if params.dtype == info.dtype:
            problems.append(f"the model is already {info.dtype}; remove this step or pick another dtype")
        return problems

    def output_dtype(self, info: ModelInfo, params: CastParams) -> str:
        return params.dtype

    def transform(self, lm, params: CastParams, targets: list[str]):
        import torch

        lm.model.to(getattr(torch, params.dtype))
        return []
