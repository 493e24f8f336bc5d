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
        "steps": [_replayable(s, r).model_dump() for s, r in zip(steps, records)],
        "records": [r.model_dump() for r in records],
    }
    atomic_write(Path(out_dir) / MANIFEST, json.dumps(manifest, indent=2))
    return Path(out_dir) / MANIFEST


def _replayable(step: Step, record: StepRecord) -> Step:
    """auto_exclude is decided once; the artifact replays its decision as explicit exclude patterns."""
    if step.auto_exclude is None:
        return step
    from optkit.sensitivity import exclude_patterns

    kept = record.details.get("auto_exclude", {}).get("kept", [])
    params = {**step.params, "exclude": [*step.params.get("exclude", []), *exclude_patterns(kept)]}
    return Step(method=step.method, params=params)


def load_artifact(folder: Path, device: str):
    from optkit import models
    from optkit.methods.base import apply_steps

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        source = Checkpoint(**manifest["source"])
        model = ModelSpec(**manifest["model"])
        steps = [Step(**s) for s in manifest["steps"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{folder / MANIFEST} is not a valid optkit manifest ({exc}); re-run optkit quantize") from None
    lm = models.load(source, model.dtype, device, model.trust_pickle, model.trust_remote_code)
    lm, _ = apply_steps(lm, steps)
    return lm
