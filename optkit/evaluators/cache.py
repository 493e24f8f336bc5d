"""Evaluation result cache: an unchanged model on an unchanged task is not evaluated again.

Key: (model fingerprint, what is evaluated and how, EVAL_VERSION, the torch / transformers / engine library
versions). The model fingerprint covers the source checkpoint's files (name, size, mtime: cheap, and any rewrite
changes it; a hub id: its resolved commit, and no caching when that is unknown), dtype, device, the variant's
steps and what they changed (so an auto_exclude that decides differently is a different model). Entries
live in $OPTKIT_CACHE/eval (default ~/.cache/optkit/eval). Off with OPTKIT_NO_CACHE=1 or
eval.cache: false. Results read back carry details["cached"] = True.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from optkit.files import atomic_write
from optkit.results import EvalResult

EVAL_VERSION = 2  # bump when an evaluator's numbers change for the same inputs (2: the tokenizer's BOS rule)


def enabled(spec_flag: bool = True) -> bool:
    return spec_flag and os.environ.get("OPTKIT_NO_CACHE", "").strip().lower() not in ("1", "true", "yes")


def root() -> Path:
    from optkit.files import cache_dir

    return cache_dir() / "eval"


def _files(location: str) -> list:
    path = Path(location)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    else:
        return []  # a hub id: the id itself is the fingerprint
    out = []
    for p in files:
        st = p.stat()
        out.append([str(p.relative_to(path)) if p != path else p.name, st.st_size, st.st_mtime_ns])
    return out


def model_key(checkpoint, dtype: str, device: str, steps: list, applied: list | None = None,
              engine: str | None = None) -> str | None:
    """Deterministic fingerprint of the model a variant evaluates. `applied` (the StepRecords) adds what the
    steps decided at run time: which modules they changed and which they left (auto_exclude's choice can
    differ between runs of the same recipe step, and so would the model). `engine`, when a variant names one: the
    same file run by another engine is another model (a GGUF as shipped in llama.cpp vs converted in PyTorch).
    A hub id is identified by the commit its revision resolved to; None (no caching) when that is unknown."""
    if checkpoint.kind == "hub" and not getattr(checkpoint, "commit", None):
        return None
    blob = {"kind": checkpoint.kind, "location": checkpoint.location, "files": _files(checkpoint.location),
            "dtype": dtype, "device": device,
            "steps": [_resolved(s) for s in steps],
            "applied": [{"changed": sorted(r.modules_changed), "kept": sorted(m.module for m in r.modules_skipped)}
                        for r in applied or []]}
    if engine:
        blob["engine"] = engine
    if checkpoint.kind == "hub":
        blob["commit"] = checkpoint.commit
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _resolved(step) -> dict:
    """A step with every parameter it runs with, defaults included: a default that changes (llmc.gptq's act-order
    did) changes the model, and must change the key as much as a parameter written in the recipe."""
    data = step.model_dump(mode="json") if hasattr(step, "model_dump") else dict(step)
    try:
        from optkit import registry

        data["params"] = registry.get(data["method"]).Params.model_validate(data.get("params") or {}).model_dump(
            mode="json")
    except Exception:  # noqa: BLE001 - an unknown method or bad params fail elsewhere; the key stays as written
        pass
    return data


def entry_key(model: str, what: dict) -> str:
    try:
        import lm_eval

        harness = getattr(lm_eval, "__version__", "?")
    except ImportError:
        harness = None
    blob = {"model": model, "what": what, "optkit_eval": EVAL_VERSION, "lm_eval": harness, "stack": _stack()}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _stack() -> dict:
    """The libraries a result depends on besides the model: a result measured under transformers 4.57 (its
    tokenizer, its kernels) is not reused under 5.x, nor one of a quantizer's output under another version."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "onnxruntime", "llama_cpp_python", "torchao", "llmcompressor",
                 "compressed-tensors", "bitsandbytes"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def load(key: str) -> list[EvalResult] | None:
    path = root() / f"{key}.json"
    try:
        rows = json.loads(path.read_text())
        if not isinstance(rows, list) or not rows:
            return None  # another shape than optkit writes: evaluate again
        results = [EvalResult.model_validate(r) for r in rows]
    except (OSError, ValueError, TypeError, RecursionError):
        return None  # missing or damaged: evaluate again
    for r in results:
        r.details["cached"] = True
    return results


def store(key: str, results: list[EvalResult]) -> None:
    try:
        atomic_write(root() / f"{key}.json", "[" + ",".join(r.model_dump_json() for r in results) + "]")
    except OSError:
        pass  # a read-only cache only costs time


def cached(key: str | None, compute) -> list[EvalResult]:
    """compute() unless key has a stored result; key None means the cache is off."""
    if key is not None:
        hit = load(key)
        if hit is not None:
            return hit
    results = compute()
    if key is not None:
        store(key, results)
    return results
