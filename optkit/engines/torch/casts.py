"""Casts: the cheapest variant, and the baseline every quantized variant should beat."""

from __future__ import annotations

from typing import Literal

from optkit.engines.method import ModelInfo, Params
from optkit.engines.torch.transform import ModuleTransform


class CastParams(Params):
    dtype: Literal["bfloat16", "float16", "float32"]


class Cast(ModuleTransform):
    name = "cast"
    Params = CastParams

    def candidates(self, model) -> list[str]:
        return [n for n, _ in model.named_modules() if n]  # the whole model, not only its linears

    def bytes_per_weight(self, params, in_features, act_bytes):
        return None  # float weights follow the dtype, which the forecast tracks itself

    def check(self, info: ModelInfo, params: CastParams) -> list[str]:
        problems = super().check(info, params)
        if params.include or params.exclude:
            problems.append("cast applies to the whole model; remove include/exclude")
        if params.dtype == info.dtype:
            problems.append(f"the model is already {info.dtype}; remove this step or pick another dtype")
        return problems

    def output_dtype(self, info: ModelInfo, params: CastParams) -> str:
        return params.dtype

    def transform(self, lm, params: CastParams, targets: list[str]):
        """Parameters and saved buffers change dtype; buffers a checkpoint does not hold (rotary inv_freq) keep
        theirs, as they do when transformers loads the saved model in that dtype: the model measured here is the
        one a server loads (a bf16 inv_freq moved logits by ~1e-3 on a tiny Llama)."""
        import torch

        kept = [(mod, name, buf) for mod in lm.model.modules() for name, buf in mod.named_buffers(recurse=False)
                if name in mod._non_persistent_buffers_set and buf is not None and buf.is_floating_point()]
        lm.model.to(getattr(torch, params.dtype))
        for mod, name, buf in kept:
            setattr(mod, name, buf)
        return []
