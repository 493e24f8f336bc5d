"""PyTorch eager dynamic int8 (torch.ao.quantization.quantize_dynamic): CPU only, deprecated upstream.

Fast on CPU, but activation outliers (e.g. at down_proj) can wreck accuracy: the report shows it.
"""

from __future__ import annotations

import warnings

from optkit.methods.base import Method, ModelInfo, Params


class DynamicInt8(Method):
    name = "torch.dynamic_int8"
    devices = ("cpu",)

    def check(self, info: ModelInfo, params: Params) -> list[str]:
        problems = []
        if info.dtype != "float32":
            problems.append(f"dynamic int8 needs a float32 model (it is {info.dtype}); remove the cast before it")
        if info.quantized:
            problems.append("the model is already quantized; put torch.dynamic_int8 first")
        return problems

    def transform(self, lm, params: Params, targets: list[str]):
        import torch
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation is recorded once, in the step notes
            quantize_dynamic(lm.model, set(targets), dtype=torch.qint8, inplace=True)
        return []

    notes = ("torch.ao.quantization is deprecated upstream; prefer torchao.int8_dynamic for new work",)
