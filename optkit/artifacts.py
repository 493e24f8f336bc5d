"""Artifacts written by `optkit quantize / prune / export`: the model in a format an engine loads without
optkit wherever one exists (an HF safetensors folder for casts, pruning and bitsandbytes; an ONNX folder;
a GGUF file), and a replay manifest only where none does (torchao, torch dynamic int8: their weights do not
serialize to safetensors), which replays the recorded steps on the source. Every artifact carries optkit.json:
format, the source by content hash (a hub id: by commit) and where it was last seen, steps, records, the trust
its source needed (`needs`: granted again by the caller's flags, never by the file), optkit version.

A replay artifact copied to another folder or machine loads wherever its source can be found (where it was
last seen, or its name: an alias, a hub id, a path beside the artifact); otherwise loading stops with one line
naming the source and its hash.
"""

from __future__ import annotations

import json
from pathlib import Path

from optkit.checkpoints import MANIFEST, SHA1, Checkpoint, content_hash, resolve
from optkit.errors import BadInput
from optkit.files import atomic_write
from optkit.recipe import ModelSpec, Step
from optkit.results import StepRecord
from optkit.trust import Trust, needed_by
from optkit.version import __version__


def _replayable(step: Step, record: StepRecord) -> Step:
    """auto_exclude is decided once; the artifact replays its decision as explicit exclude patterns."""
    if step.auto_exclude is None:
        return step
    from optkit.common.auto_exclude import exclude_patterns

    kept = record.details.get("auto_exclude", {}).get("kept", [])
    params = {**step.params, "exclude": [*step.params.get("exclude", []), *exclude_patterns(kept)]}
    return Step(method=step.method, params=params)


def write(out_dir: Path, lm, source: Checkpoint, model: ModelSpec, steps: list[Step],
          records: list[StepRecord], trust: Trust | None = None) -> Path:
    """Save `lm` (the result of `steps` on `source`) into out_dir in its engine's format, or as a replay
    manifest where it has none; optkit.json last, so a folder with one is complete. `needs`: the trust its
    source took to load (trust.py), which loading the artifact will ask the caller for again."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt = lm.save(out_dir)
    trust = trust or Trust()
    needs = trust.given() if source.kind == "hub" else needed_by(source.location, source.kind, trust)
    if fmt is not None:  # its own files: pickle is gone (safetensors), custom code may still be named
        needs = [n for n in needs if n == "trust_remote_code" and _names_code(out_dir)]
    manifest = {
        "optkit": __version__,
        "format": fmt or "replay",
        "model_format": lm.format,  # the model's state; for replay, what the steps produce
        "engine": lm.engine,
        "dtype": lm.dtype,  # what the artifact computes in: loading it uses this, not the caller's default
        "needs": needs,
        "source": {"given": source.given, "kind": source.kind, "format": source.format,
                   "sha256": content_hash(source.location) if source.kind != "hub" else None,
                   "revision": source.revision, "commit": source.commit, "last_seen": source.location},
        "model": model.model_dump(),
        "steps": [_replayable(s, r).model_dump() for s, r in zip(steps, records)],
        "records": [r.model_dump() for r in records],
    }
    atomic_write(out_dir / MANIFEST, json.dumps(manifest, indent=2))
    return out_dir / MANIFEST


def _names_code(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("auto_map"))


def read(folder: Path) -> dict:
    """optkit.json as a dict with `_steps`, `_model` and `needs` checked; BadInput naming the file otherwise.
    Older manifests kept trust in `model` (trust_pickle: true); that is read as what the source needs, never as
    trust granted."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        model = dict(manifest["model"])
        old = [name for key, name in (("trust_pickle", "allow_pickle"), ("trust_remote_code", "trust_remote_code"))
               if model.pop(key, False)]
        needs = manifest.get("needs", [])
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            raise ValueError(f"needs is {needs!r}, not a list of names")
        manifest["needs"] = list(dict.fromkeys([*needs, *old]))
        manifest["_steps"] = [Step(**s) for s in manifest["steps"]]
        manifest["_model"] = ModelSpec(**model)
        if not isinstance(manifest["source"]["given"], str):
            raise ValueError("source.given is not a name")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise BadInput(f"{path} is not a valid optkit manifest ({type(exc).__name__}: {first}); re-create the "
                       "artifact with optkit quantize") from None
    return manifest


def find_source(folder: Path, manifest: dict) -> Checkpoint:
    """The replay source: where it was last seen, else its name (alias, hub id, or a path relative to the
    artifact), accepted only with the recorded content hash."""
    src = manifest["source"]
    want = src.get("sha256")
    if src.get("kind") == "hub":  # pinned at the commit it was built from: the same bytes, or nothing
        commit = src.get("commit")
        if not isinstance(commit, str) or not SHA1.match(commit):
            raise BadInput(f"artifact {folder} replays its steps on hub model {src['given']!r} but records no commit "
                           "to load it at, so the same weights cannot be promised; re-create it with this optkit")
        return Checkpoint(src["given"], "hub", src["given"], src.get("format", "hf"), commit, commit)
    if not isinstance(want, str):
        raise BadInput(f"artifact {folder} records no content hash for its source {src['given']!r}, so the same "
                       "weights cannot be promised; re-create it with this optkit")
    seen = []
    for name in (src.get("last_seen") or src.get("location"), src["given"]):
        if not name:
            continue
        for base in (None, Path(folder).parent, Path(folder)):
            try:
                ckpt = resolve(name, base)
            except BadInput:
                continue
            if ckpt.location in seen:
                continue
            seen.append(ckpt.location)
            if content_hash(ckpt.location) == want:
                return ckpt
    short = f"sha256 {want[:16]}..."
    found = f"; found {', '.join(seen)} with other contents" if seen else ""
    raise BadInput(f"artifact {folder} replays its steps on {src['given']!r} ({short}), last seen at "
                   f"{src.get('last_seen') or src.get('location')}, which cannot be found{found}; put that "
                   "checkpoint back there (or beside the artifact) and retry")
