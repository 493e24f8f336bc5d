"""torchao weight quantization: int8 weight-only, int8 dynamic activation + int8 weight, int4 weight-only.

torchao skips layers it cannot handle without saying so; run_step notices and records them.
"""

from __future__ import annotations

from typing import Literal

from optkit.engines.method import ModelInfo, Params, excluded
from optkit.engines.torch.transform import ModuleTransform


class _Torchao(ModuleTransform):
    produces = "torchao"
    requires = ("torchao",)
    extra = "torchao"

    def config(self, params: Params, device: str):
        raise NotImplementedError

    def bytes_per_weight(self, params, in_features, act_bytes):
        return 1 + act_bytes / in_features  # int8, one scale per output row

    def transform(self, lm, params: Params, targets: list[str]):
        from torchao.quantization import quantize_

        wanted = set(targets)
        quantize_(lm.model, self.config(params, lm.device), filter_fn=lambda mod, fqn: fqn in wanted)
        return []


class Int8WeightOnly(_Torchao):
    name = "torchao.int8_weight_only"

    def config(self, params, device):
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig()


class Int8Dynamic(_Torchao):
    name = "torchao.int8_dynamic"

    def config(self, params, device):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        return Int8DynamicActivationInt8WeightConfig()


class Int4Params(Params):
    group_size: Literal[32, 64, 128, 256] = 128


class Int4WeightOnly(_Torchao):
    """On CPU the prototype opaque-tensor config (bf16 only); on CUDA the tinygemm tile-packed layout."""

    name = "torchao.int4_weight_only"
    Params = Int4Params

    def bytes_per_weight(self, params: Int4Params, in_features, act_bytes):
        return 0.5 + 4 / params.group_size  # bf16 scale + zero point per group

    def check(self, info: ModelInfo, params: Int4Params) -> list[str]:
        problems = super().check(info, params)
        if info.dtype != "bfloat16":
            problems.append(
                f"int4 weight-only needs a bfloat16 model (it is {info.dtype}); "
                "add a step `method: cast, params: {dtype: bfloat16}` before it"
            )
        g = params.group_size
        bad = [n for n, (_, k) in info.linears.items() if k % g and not excluded(n, params)]
        if bad:
            widths = sorted({info.linears[n][1] for n in bad})
            fits = [s for s in (256, 128, 64, 32) if all(w % s == 0 for w in widths)]
            fix = f"use group_size {' or '.join(map(str, fits))}" if fits else "exclude them"
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            problems.append(f"group_size {g} does not divide in_features {widths} of {shown}; {fix}")
        return problems

    def config(self, params: Int4Params, device: str):
        if device.startswith("cuda"):
            from torchao.quantization import Int4WeightOnlyConfig

            return Int4WeightOnlyConfig(group_size=params.group_size, int4_packing_format="tile_packed_to_4d")
        from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

        return PrototypeInt4WeightOnlyConfig(group_size=params.group_size)


class Float8Dynamic(_Torchao):
    """float8 dynamic activations + float8 weights: needs the fp8 tensor cores of CUDA sm_89+ (Ada, Hopper)."""

    name = "torchao.float8_dynamic"
    devices = ("cuda",)
    device_note = "needs CUDA sm_89+ (Ada or Hopper GPUs)"

    def bytes_per_weight(self, params, in_features, act_bytes):
        return 1 + 4 / in_features  # float8, one float32 scale per row

    def check(self, info: ModelInfo, params: Params) -> list[str]:
        problems = super().check(info, params)
        if info.device.startswith("cuda"):
            import torch

            major, minor = torch.cuda.get_device_capability()
            if (major, minor) < (8, 9):
                problems.append(f"float8 needs CUDA sm_89+; this GPU is sm_{major}{minor}: use torchao.int8_dynamic")
        return problems

    def config(self, params, device):
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig

        return Float8DynamicActivationFloat8WeightConfig()
