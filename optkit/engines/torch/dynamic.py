"""PyTorch eager dynamic int8 (torch.ao.quantization.quantize_dynamic): CPU only, deprecated upstream.

Fast on CPU, but activation outliers (e.g. at down_proj) can wreck accuracy: the report shows it.
"""

from __future__ import annotations

import warnings

from optkit.engines.method import ModelInfo, Params
from optkit.engines.torch.transform import ModuleTransform


class DynamicInt8(ModuleTransform):
    name = "torch.dynamic_int8"
    produces = "torch-dynamic"
    devices = ("cpu",)

    def check(self, info: ModelInfo, params: Params) -> list[str]:
        problems = super().check(info, params)
        if info.dtype != "float32":
            problems.append(f"dynamic int8 needs a float32 model (it is {info.dtype}); remove the cast before it")
        return problems

    def bytes_per_weight(self, params, in_features, act_bytes):
        return 1.0  # int8 weights, one scale per tensor

    def transform(self, lm, params: Params, targets: list[str]):
        import torch
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation is recorded once, in the step notes
            quantize_dynamic(lm.model, set(targets), dtype=torch.qint8, inplace=True)
        return []

    notes = ("torch.ao.quantization is deprecated upstream; prefer torchao.int8_dynamic for new work",)
