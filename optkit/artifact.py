"""Artifacts written by `optkit quantize`: a folder with an optkit.json manifest naming the source
checkpoint and the steps. Loading replays the steps on the source, which is deterministic for these
round-to-nearest methods and needs no pickle (torchao and dynamic-int8 weights cannot be saved as
safetensors)."""

from __future__ import annotations

import json
from pathlib import Path

from optkit import __version__
from optkit.errors import BadInput
from optkit.models import MANIFEST, Checkpoint
from optkit.recipe import ModelSpec, Step
from optkit.results import StepRecord, atomic_write


def write_artifact(out_dir: Path, source: Checkpoint, model: ModelSpec, steps: list[Step],
                   records: list[StepRecord]) -> Path:
    manifest = {
        "optkit": __version__,
        "kind": "replay",
        "source": {"given": source.given, "kind": source.kind, "location": source.location},
        "model": model.model_dump(),
        "steps": [s.model_dump() for s in steps],
        "records": [r.model_dump() for r in records],
    }
    atomic_write(Path(out_dir) / MANIFEST, json.dumps(manifest, indent=2))
    return Path(out_dir) / MANIFEST


def load_artifact(folder: Path, device: str):
    from optkit import models, registry
    from optkit.methods.base import run_step

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        source = Checkpoint(**manifest["source"])
        model = ModelSpec(**manifest["model"])
        steps = [Step(**s) for s in manifest["steps"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{folder / MANIFEST} is not a valid optkit manifest ({exc}); re-run optkit quantize") from None
    lm = models.load(source, model.dtype, device, model.trust_pickle, model.trust_remote_code)
    for step in steps:
        method = registry.get(step.method)
        run_step(method, lm, method.Params.model_validate(step.params))
    return lm
