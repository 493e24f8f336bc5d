"""Formats: what state a model is in, which engine runs it, and how it is written to disk.

Every checkpoint and every step's output has a format. Methods declare the formats they accept and the one
they produce (engines/method.py), engines the formats they load (engines/), and preflight walks a variant's
steps over these declarations: a chain is valid when each step accepts what the previous one produced, and
when it is not, the fix is found the same way (a registered method that turns the current format into an
accepted one).

A plugin adds a format by giving its method a Format object as `produces` (and its engine `formats`); the
built-ins are listed here so messages can name them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str
    engine: str  # the engine (registry.engines name) that runs a model in this format
    label: str  # for people: what it is
    packed: bool = False  # weights packed by a quantizer: methods that need float weights refuse it
    # how a model in this format is written as an artifact: "hf-folder" (save_pretrained), "onnx-folder",
    # "gguf-file", "replay" (no format any engine loads: a manifest that replays the steps on the source)
    artifact: str = "replay"
    # said next to a timing when the engine optkit measures this format in is not the one it ships to, so its
    # speed is not the format's (the recommendation then does not rank it on speed); "" = the timing stands
    speed_note: str = ""


BUILTIN = {f.name: f for f in (
    Format("hf", "torch", "a float PyTorch model", artifact="hf-folder"),
    Format("torchao", "torch", "torchao-quantized weights", packed=True),
    Format("bnb", "torch", "bitsandbytes-quantized weights", packed=True, artifact="hf-folder"),
    Format("torch-dynamic", "torch", "torch dynamic int8 modules", packed=True),
    Format("compressed-tensors", "torch", "llm-compressor compressed-tensors weights", packed=True,
           artifact="hf-folder", speed_note="transformers on CPU dequantizes compressed-tensors weights: not the "
           "speed vLLM's kernels would give"),
    Format("onnx", "onnxruntime", "an ONNX model", artifact="onnx-folder"),
    Format("onnx-quantized", "onnxruntime", "an onnxruntime-quantized ONNX model", packed=True,
           artifact="onnx-folder"),
    Format("gguf", "llamacpp", "a GGUF file", artifact="gguf-file"),
    Format("openvino", "openvino", "an OpenVINO IR folder", packed=True, artifact="openvino-folder"),
    Format("replay", "torch", "an optkit replay artifact", packed=True),
)}


def get(fmt: str | Format) -> Format:
    """A Format by name (built-in), or the object itself (a plugin's)."""
    if isinstance(fmt, Format):
        return fmt
    try:
        return BUILTIN[fmt]
    except KeyError:
        return Format(fmt, fmt, f"format {fmt!r}")  # a plugin format named only by string: its own engine


def name(fmt: str | Format) -> str:
    return fmt.name if isinstance(fmt, Format) else fmt
