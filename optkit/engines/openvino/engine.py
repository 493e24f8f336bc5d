"""The OpenVINO engine: HF folders exported to OpenVINO IR (export.py, cached), and IR folders ov.compress or
optimum-cli wrote, in OpenVINO's own environment (envs.py).

describe runs in optkit's environment (the config, no OpenVINO there); load runs in the OpenVINO environment's
worker (handoff.py hands it a folder: the steps' output, or a GGUF's safetensors conversion). It computes in float32
with a float32 KV cache unless told otherwise (OPTKIT_OV_PRECISION=bf16|f16, OPTKIT_OV_KV_CACHE=u8|f16|bf16|f32):
OpenVINO's CPU defaults (bf16 where the CPU has it, a u8 or f16 KV cache) do not match PyTorch fp32. The settings
the compiled model reports back go into the result (engine_run.settings).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from optkit.engines.base import Engine, ModelInfo
from optkit.engines.openvino import ENV
from optkit.errors import BadInput

PRECISIONS = ("f32", "bf16", "f16")
KV_CACHES = ("f32", "bf16", "f16", "u8")
MAX_LEN = 4096  # the most context the served decoder reserves room for (the model's own, if smaller)


def properties() -> dict[str, str]:
    """The OpenVINO compile properties optkit runs with (OPTKIT_OV_* override the defaults: f32 throughout)."""
    precision = os.environ.get("OPTKIT_OV_PRECISION") or "f32"
    kv = os.environ.get("OPTKIT_OV_KV_CACHE") or precision
    if precision not in PRECISIONS:
        raise BadInput(f"OPTKIT_OV_PRECISION={precision!r}: OpenVINO computes in {', '.join(PRECISIONS)}")
    if kv not in KV_CACHES:
        raise BadInput(f"OPTKIT_OV_KV_CACHE={kv!r}: OpenVINO keeps its KV cache in {', '.join(KV_CACHES)}")
    return {"INFERENCE_PRECISION_HINT": precision, "KV_CACHE_PRECISION": kv}


class OpenVinoEngine(Engine):
    name, label = "openvino", "OpenVINO"
    formats = ("hf", "openvino", "gguf")  # gguf: exported from its safetensors conversion (handoff.py)
    requires, extra = ("openvino",), "openvino"
    venv = ENV  # runs in an environment of its own: `make setup-openvino`, or built on first use

    def describe(self, ckpt, dtype: str, device: str, trust_remote_code: bool = False,
                 trust_pickle: bool = False) -> ModelInfo:
        """The linear shapes as PyTorch reads them from the config (an IR folder keeps the HF config beside it)."""
        from dataclasses import replace

        from optkit.engines.torch.engine import TorchEngine

        if dtype != "float32":
            raise BadInput(f"the OpenVINO engine loads float32 models (it is asked for {dtype}); set model.dtype: "
                           "float32 and OPTKIT_OV_PRECISION for the precision OpenVINO computes in")
        if device != "cpu":
            raise BadInput(f"the OpenVINO engine runs on the CPU here, not {device}; use --device cpu")
        properties()  # a bad setting: one line now, before any worker
        if trust_remote_code:
            raise BadInput("the OpenVINO engine does not run remote code; drop trust_remote_code or use engine: torch")
        ir = ckpt.format == "openvino"
        plain = replace(ckpt, kind="folder", format="hf") if ir else ckpt
        # an IR folder's openvino_model.bin is OpenVINO's weight blob, not pickle: only the config is read here
        info = TorchEngine().describe(plain, dtype, device, trust_remote_code, trust_pickle or ir)
        info.format = "hf" if ckpt.format == "gguf" else ckpt.format
        return info

    def check_served(self, info: ModelInfo, steps: list) -> list[str]:
        if info.format not in ("hf", "openvino"):
            return [f"OpenVINO runs HF folders or OpenVINO IR; the steps make {info.format}"]
        return []

    def load(self, ckpt, dtype: str = "float32", device: str = "cpu", trust_pickle: bool = False,
             trust_remote_code: bool = False):
        from optimum.intel import OVModelForCausalLM
        from transformers import AutoConfig

        from optkit.engines.openvino import export, tokens
        from optkit.engines.openvino.model import OvLM
        from optkit.errors import RunError

        if ckpt.kind in ("gguf", "hub"):
            raise BadInput(f"the OpenVINO engine loads a local folder, and {ckpt.given!r} is a {ckpt.kind}; optkit "
                           "converts it in its own environment first (run it through optkit eval / run)")
        props = properties()
        started = time.perf_counter()
        source = Path(ckpt.location)
        folder = source if ckpt.format == "openvino" else export.exported(source)
        exported = time.perf_counter()
        if not (folder / export.XML).is_file():
            raise BadInput(f"{folder} holds no {export.XML}; give an HF folder or an OpenVINO IR folder")
        config = AutoConfig.from_pretrained(folder)
        model = OVModelForCausalLM.from_pretrained(folder, ov_config=dict(props), compile=True)
        tokenizer, checks, why = tokens.load(folder, ckpt.given)
        compiled = model.request.get_compiled_model()
        settings = {key: _named(compiled.get_property(key)) for key in (
            "INFERENCE_PRECISION_HINT", "KV_CACHE_PRECISION", "INFERENCE_NUM_THREADS")}
        if settings["INFERENCE_PRECISION_HINT"] != props["INFERENCE_PRECISION_HINT"]:
            raise RunError(f"OpenVINO computes in {settings['INFERENCE_PRECISION_HINT']}, not the "
                           f"{props['INFERENCE_PRECISION_HINT']} asked for, on this CPU; set OPTKIT_OV_PRECISION")
        decoder = None
        max_len = min(getattr(config, "max_position_embeddings", None) or MAX_LEN, MAX_LEN)
        if why is None:
            from optkit.engines.openvino.serving import GenAIDecoder

            decoder = GenAIDecoder(folder, props, config.vocab_size, max_len)
            settings["decoding"] = "openvino_genai.ContinuousBatchingPipeline (what LLMPipeline runs on CPU)"
        else:
            settings["decoding"] = f"optimum-intel OVModelForCausalLM, not openvino-genai: {why}"
        compression = export.marker(folder).get("compression")
        settings["weights"] = json.dumps(compression) if compression else "as the IR holds them"
        kinds, _ = export.weights(folder / export.XML)
        total = sum(kinds.values()) or 1
        settings["weight_types"] = ", ".join(f"{k} {n / total:.0%}" for k, n in sorted(kinds.items(), key=lambda kv:
                                                                                       -kv[1]) if n / total >= 0.01)
        startup = {"export": round(exported - started, 2), "total": round(time.perf_counter() - started, 2)}
        lm = OvLM(model, folder, "openvino" if ckpt.format == "openvino" else ckpt.format, tokenizer, config,
                  _param_count(config), settings, startup, decoder)
        lm.tokenizer_checks = checks
        return lm


def _named(value) -> str:
    """An OpenVINO property as text: element types by their short names (f32, u8)."""
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


def _param_count(config) -> int:
    """Logical weights, from the architecture on the meta device (compressed IR weights count less)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
