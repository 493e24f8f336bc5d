"""The vLLM engine: HF and compressed-tensors folders served by vLLM, in vLLM's own environment (envs.py).

describe and check_served run in optkit's environment (preflight: the config and the steps' schemes, no vLLM);
load runs in the vLLM environment's worker (handoff.py hands it a folder: the steps' output, or the checkpoint's
safetensors conversion).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from optkit.engines.base import Engine, ModelInfo
from optkit.engines.vllm import ENV, schemes
from optkit.engines.vllm.runtime import MAX_LEN
from optkit.errors import BadInput

DTYPES = ("float32", "bfloat16", "float16")


class VllmEngine(Engine):
    name, label = "vllm", "vLLM"
    formats = ("hf", "compressed-tensors", "gguf")  # gguf: served from its safetensors conversion (handoff.py)
    requires, extra = ("vllm",), "vllm"
    venv = ENV  # runs in an environment of its own: `make setup-vllm`, or built on first use

    def describe(self, ckpt, dtype: str, device: str, trust_remote_code: bool = False,
                 trust_pickle: bool = False) -> ModelInfo:
        """The linear shapes as PyTorch reads them from the config (a GGUF file: from its conversion, which the
        handoff makes in optkit's environment); a compressed-tensors folder's schemes checked against vLLM's
        kernels here."""
        from optkit.engines.torch.engine import TorchEngine

        if dtype not in DTYPES:
            raise BadInput(f"vLLM computes in {', '.join(DTYPES)}, not {dtype}; set model.dtype")
        info = TorchEngine().describe(ckpt, dtype, device, trust_remote_code, trust_pickle)
        info.format = "hf" if ckpt.format == "gguf" else ckpt.format
        if info.format not in ("hf", "compressed-tensors"):
            raise BadInput(f"vLLM serves HF or compressed-tensors folders, and {ckpt.given!r} is {info.format}")
        config = Path(ckpt.location) / "config.json"
        quant = json.loads(config.read_text()).get("quantization_config") if config.is_file() else None
        if quant:
            ignore = set(quant.get("ignore") or [])
            targets = [n for n in info.linears if n not in ignore]
            for scheme in schemes.from_config(quant):
                found = schemes.problems(scheme, info.linears, targets, device)
                if found:
                    raise BadInput(f"{ckpt.given}: {found[0]}")
        return info

    def check_served(self, info: ModelInfo, steps: list) -> list[str]:
        from optkit.engines.method import select

        if info.format not in ("hf", "compressed-tensors"):
            return [f"vLLM serves HF or compressed-tensors folders; the steps make {info.format}"]
        for _, params in steps:
            scheme = schemes.from_params(params)
            if scheme is not None:
                targets = select(list(info.linears), params)[0] if info.linears else []
                found = schemes.problems(scheme, info.linears, targets, info.device)
                if found:
                    return found
        return []

    def load(self, ckpt, dtype: str = "float32", device: str = "cpu", trust_pickle: bool = False,
             trust_remote_code: bool = False):
        from transformers import AutoConfig

        from optkit.engines.llamacpp.convert import hf_folder
        from optkit.engines.vllm import runtime
        from optkit.engines.vllm.model import VllmLM

        if trust_remote_code:
            raise BadInput("the vLLM engine does not run remote code; drop trust_remote_code or use engine: torch")
        folder = Path(hf_folder(ckpt).location) if ckpt.kind == "gguf" else Path(ckpt.location)
        config = AutoConfig.from_pretrained(folder)
        wanted = int(os.environ.get("OPTKIT_VLLM_MAX_LEN") or MAX_LEN)
        max_len = min(getattr(config, "max_position_embeddings", None) or wanted, wanted)
        llm, startup = runtime.start(str(folder), dtype, max_len)
        params = _param_count(config)
        # lm-eval's adapter cuts contexts at the config's length: at most what vLLM reserved KV cache for
        config.max_position_embeddings = max_len
        fmt = ckpt.format if ckpt.format == "compressed-tensors" else "hf"
        return VllmLM(llm, folder, fmt, dtype, device, config, params, startup)


def _param_count(config) -> int:
    """Logical weights, from the architecture on the meta device (a packed checkpoint's tensors count less)."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    plain = copy.deepcopy(config)
    if hasattr(plain, "quantization_config"):
        del plain.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(plain)
    return sum(p.numel() for p in model.parameters())
