"""Checkpoint -> LoadedModel through the engine that loads its format, and the preflight facts of a
checkpoint (ModelInfo) from its config or header alone. Replay artifacts load their source and replay their
steps here."""

from __future__ import annotations

from pathlib import Path

from optkit import formats, registry
from optkit.checkpoints import Checkpoint
from optkit.engines.base import LoadedModel, ModelInfo
from optkit.errors import BadInput
from optkit.trust import Trust, require


def engine_name(ckpt: Checkpoint, engine: str | None = None, steps=()) -> str:
    """The engine a variant starts in: the one asked for (recipe variant `engine`); else for a GGUF file llama.cpp
    when the first step is a llama.cpp method (gguf.quantize on the file as shipped), PyTorch otherwise (the
    file converted once, as the first wave did); else the format's own."""
    if engine:
        return engine
    if ckpt.kind == "gguf":
        try:
            first = registry.methods.cls(steps[0].method).accepts if steps else ()
        except BadInput:  # an unknown method: preflight names it with its step
            first = ()
        return formats.get("gguf").engine if "gguf" in first and "hf" not in first else "torch"
    return "torch" if ckpt.format == "replay" else formats.get(ckpt.format).engine


def _artifact_dtype(ckpt: Checkpoint, dtype: str) -> str:
    """An artifact computes in the dtype it was saved in (its manifest says), whatever the default asks."""
    if ckpt.kind != "artifact":
        return dtype
    from optkit.artifacts import read

    return read(Path(ckpt.location)).get("dtype") or dtype


def describe(ckpt: Checkpoint, dtype: str, device: str, trust_remote_code: bool = False,
             engine: str | None = None, trust_pickle: bool = False) -> ModelInfo:
    dtype = _artifact_dtype(ckpt, dtype)
    trust = Trust(allow_pickle=trust_pickle, trust_remote_code=trust_remote_code)
    if ckpt.kind == "artifact":  # what its source needed, before anything of it loads
        _require(ckpt, trust)
    if ckpt.format == "replay":  # the source must be there now, not when a worker tries to load it
        from optkit.artifacts import find_source, read

        manifest = read(Path(ckpt.location))
        find_source(Path(ckpt.location), manifest)
        return ModelInfo(linears={}, dtype=dtype, device=device, format=manifest.get("model_format") or "replay")
    name = engine_name(ckpt, engine)
    runner = registry.engines.get(name)
    if ckpt.format not in runner.formats:
        have = formats.get(ckpt.format).label
        raise BadInput(f"engine {name!r} runs {' or '.join(formats.get(f).label for f in runner.formats)}, and "
                       f"checkpoint {ckpt.given!r} is {have}; drop engine: {name}, or convert it in a step")
    return runner.describe(ckpt, dtype, device, trust_remote_code, trust_pickle)


def load(ckpt: Checkpoint, dtype: str = "float32", device: str = "cpu", trust_pickle: bool = False,
         trust_remote_code: bool = False, engine: str | None = None) -> LoadedModel:
    """The checkpoint in its engine, with the trust the caller granted (and nothing an artifact claims)."""
    trust = Trust(allow_pickle=trust_pickle, trust_remote_code=trust_remote_code)
    if ckpt.kind == "artifact":
        _require(ckpt, trust)
    if ckpt.format == "replay":
        return replay(Path(ckpt.location), device, trust)
    return registry.engines.get(engine_name(ckpt, engine)).load(ckpt, _artifact_dtype(ckpt, dtype), device,
                                                                  trust_pickle, trust_remote_code)


def _require(ckpt: Checkpoint, trust: Trust) -> None:
    from optkit.artifacts import read

    require(read(Path(ckpt.location))["needs"], trust, f"artifact {ckpt.given!r}")


def replay(folder: Path, device: str, trust: Trust | None = None) -> LoadedModel:
    """The artifact's source, loaded with the caller's trust only, and its recorded steps replayed on it."""
    from optkit.artifacts import find_source, read
    from optkit.engines.method import apply_steps

    trust = trust or Trust()
    manifest = read(folder)
    require(manifest["needs"], trust, f"artifact {str(folder)!r}")
    lm = load(find_source(folder, manifest), manifest["_model"].dtype, device, trust.allow_pickle,
              trust.trust_remote_code)
    lm, _ = apply_steps(lm, manifest["_steps"])
    return lm
