"""bitsandbytes: LLM.int8 (Linear8bitLt) and 4-bit NF4/FP4 (Linear4bit) weight quantization.

Each targeted nn.Linear is swapped for a bnb module holding quantized weights on lm.device. What bnb 0.50
does on CPU (checked on an AVX512-BF16 Xeon, torch 2.13):
- int8 runs for float32, bfloat16 and float16 models: weights and activations go through float16 to int8
  (so values beyond +-65504 would overflow), the matmul is torch._int_mm on AVX-512 CPUs, and activation
  columns above `threshold` take a float16 side path. It only takes that path in eval mode.
- 4-bit runs for all three dtypes, but on CPUs with AVX512-BF16 bnb repacks the weights at the first
  forward for a fused kernel that needs out_features % 32 == 0 and in_features % blocksize == 0 and
  computes in bfloat16 whatever compute_dtype says; other shapes crash mid-run, so check() refuses them.
A replaced lm_head that was tied to the embedding is untied: the embedding keeps its float weight.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from optkit.engines.method import ModelInfo, Params, select
from optkit.engines.torch.transform import ModuleTransform, linear_names


class LLMInt8Params(Params):
    threshold: float = Field(6.0, ge=0, description="activation outlier threshold; 0 turns the outlier path off")


class FourBitParams(Params):
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = Field(True, description="also quantize the per-block scales (saves ~0.4 bit/weight)")
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    blocksize: Literal[32, 64, 128, 256, 512, 1024, 2048, 4096] = 64


class _Bnb(ModuleTransform):
    produces = "bnb"
    requires = ("bitsandbytes",)
    extra = "bnb"
    devices = ("cpu", "cuda")

    def replacement(self, old, params: Params, device: str):
        raise NotImplementedError

    def hf_config(self, params: Params, kept: list[str]) -> dict:
        """transformers' quantization_config for this step, so save_pretrained writes a folder that
        AutoModelForCausalLM.from_pretrained loads back with the same modules quantized."""
        raise NotImplementedError

    def transform(self, lm, params: Params, targets: list[str]):
        import torch

        _quiet_import()
        model = lm.model
        # a weight shared with a module we leave float (tied lm_head / embed_tokens) must stay intact there
        owners: dict[int, list[str]] = {}
        for name, mod in model.named_modules(remove_duplicate=False):
            if isinstance(getattr(mod, "weight", None), torch.Tensor):
                owners.setdefault(id(mod.weight), []).append(name)
        wanted, untied = set(targets), {}
        kept = [n for n in linear_names(model) if n not in wanted]
        for name in targets:
            old = model.get_submodule(name)
            new = self.replacement(old, params, lm.device)
            new.train(old.training)  # bnb takes its inference kernels only in eval mode
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, new)
            others = [o for o in owners.get(id(old.weight), []) if o not in wanted]
            if others:
                untied[name] = others
        config = getattr(model, "config", None)  # None: a bare module (one layer, as the fallback ranks them)
        if config is not None:
            from transformers import BitsAndBytesConfig

            config.quantization_config = BitsAndBytesConfig(**self.hf_config(params, kept))
        if untied:
            self.details = {"untied": untied}
            if config is not None and getattr(config, "tie_word_embeddings", False):
                config.tie_word_embeddings = False  # so a later tie_weights() cannot put the float weight back
        return []


class LLMInt8(_Bnb):
    name = "bnb.int8"
    Params = LLMInt8Params

    def hf_config(self, params: LLMInt8Params, kept: list[str]) -> dict:
        return {"load_in_8bit": True, "llm_int8_threshold": params.threshold, "llm_int8_skip_modules": kept}

    def bytes_per_weight(self, params, in_features, act_bytes):
        return 1 + 4 / in_features  # int8, one float32 scale per row

    def replacement(self, old, params: LLMInt8Params, device: str):
        import bitsandbytes as bnb
        import torch
        from bitsandbytes.functional import int8_vectorwise_quant

        new = bnb.nn.Linear8bitLt(old.in_features, old.out_features, bias=old.bias is not None,
                                  has_fp16_weights=False, threshold=params.threshold, device="meta")
        # Quantize here rather than via Int8Params.to(), which quantizes only when moving off the CPU
        # (it would leave a CUDA-resident weight in float); this is the same row-wise absmax int8 it does.
        cb, scb, _ = int8_vectorwise_quant(old.weight.detach().to(device=device, dtype=torch.float16))
        new.weight = bnb.nn.Int8Params(cb, requires_grad=False, has_fp16_weights=False, CB=cb, SCB=scb)
        if old.bias is not None:
            new.bias = torch.nn.Parameter(old.bias.detach().to(device), requires_grad=False)
        return new


class FourBit(_Bnb):
    name = "bnb.4bit"
    Params = FourBitParams

    def hf_config(self, params: FourBitParams, kept: list[str]) -> dict:
        return {"load_in_4bit": True, "bnb_4bit_quant_type": params.quant_type,
                "bnb_4bit_use_double_quant": params.double_quant, "bnb_4bit_compute_dtype": params.compute_dtype,
                "llm_int8_skip_modules": kept}

    def bytes_per_weight(self, params: FourBitParams, in_features, act_bytes):
        return 0.5 + (1 if params.double_quant else 4) / params.blocksize

    def check(self, info: ModelInfo, params: FourBitParams) -> list[str]:
        problems = super().check(info, params)
        if info.device == "cpu" and _cpu_packed_kernel():
            targets, _ = select(list(info.linears), params)
            bs = params.blocksize
            bad = [n for n in targets if info.linears[n][0] % 32 or info.linears[n][1] % bs]
            if bad:
                shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                fits = [b for b in (64, 32, 128, 256) if all(info.linears[n][1] % b == 0 for n in targets)]
                fix = "exclude them" + (f" or use blocksize {fits[0]}" if fits and
                                        all(info.linears[n][0] % 32 == 0 for n in bad) else "")
                problems.append(f"bitsandbytes' CPU 4-bit kernel needs out_features % 32 == 0 and in_features % "
                                f"blocksize ({bs}) == 0; {shown} do not fit: {fix}")
        return problems

    def replacement(self, old, params: FourBitParams, device: str):
        import bitsandbytes as bnb
        import torch

        new = bnb.nn.Linear4bit(old.in_features, old.out_features, bias=old.bias is not None,
                                compute_dtype=getattr(torch, params.compute_dtype),
                                compress_statistics=params.double_quant, quant_type=params.quant_type, device="meta")
        # Params4bit quantizes on its first .to(device), on whatever device that is
        new.weight = bnb.nn.Params4bit(old.weight.detach(), requires_grad=False, blocksize=params.blocksize,
                                       compress_statistics=params.double_quant, quant_type=params.quant_type,
                                       module=new).to(device)
        if old.bias is not None:
            new.bias = torch.nn.Parameter(old.bias.detach().to(device), requires_grad=False)
        return new


def _quiet_import() -> None:
    """Import bnb without two log lines that are noise here: that the optional `kernels` package (a hub
    download) is missing, so bnb uses its built-in CPU kernel; and, on every int8 forward of a non-float16
    model, that activations are cast to float16 (by design, see the module docstring)."""
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes.autograd._functions").addFilter(_not_cast_notice)
    import bitsandbytes  # noqa: F401


def _not_cast_notice(record) -> bool:
    return "inputs will be cast from" not in str(record.msg)


def _cpu_packed_kernel() -> bool:
    """Whether bnb's 4-bit CPU forward repacks weights for its AVX512-BF16 kernel (and so has shape limits)."""
    _quiet_import()
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())
