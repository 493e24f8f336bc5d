"""Result reuse keyed by content: a rerun into the same folder keeps a finished variant only when everything its
numbers depend on is unchanged. Each VariantJob carries the hash of each part below (`key_parts`) and of them
all (`key`); the worker stamps both into its VariantResult, and the pipeline compares them with the ones a
rerun computes, naming the part that changed in its progress line.

Parts: the recipe entry (the variant's steps with every default resolved, its engine, dtype and device), the
source (content hash of the file or folder; a hub id: the commit its revision resolved to), the evaluation and
benchmark settings (with the baseline the fidelity reference and paired rounds compare to, the workload, and a
search's sensitivity or duel job's own spec), the data files'
content hashes (evaluation texts, task data, calibration text), and the versions of optkit and the libraries
that compute the numbers. A part that cannot be known (a hub commit offline) makes the key None: never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optkit.job import VariantJob
    from optkit.results import VariantResult

REASONS = {"recipe": "recipe entry changed", "source": "source changed", "eval": "eval settings changed",
           "bench": "bench settings changed", "data": "data files changed", "versions": "optkit or library "
           "versions changed"}


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]


def source_hash(ckpt) -> str | None:
    """The checkpoint's content: a file's or folder's sha256, a hub id's resolved commit (None: unknown)."""
    from optkit.checkpoints import content_hash

    if ckpt.kind == "hub":
        return f"{ckpt.location}@{ckpt.commit}" if ckpt.commit else None
    return content_hash(ckpt.location)


def data_files(job: VariantJob) -> list[str]:
    """Every local file the variant's numbers are computed from, besides the model."""
    from optkit.calibration import calibration_file
    from optkit.data import text_file
    from optkit.errors import BadInput

    files: list[Path | None] = []
    spec = job.eval
    try:
        if spec is not None:
            files += [text_file(spec.perplexity.path)] if spec.perplexity else []
            files += [text_file(spec.fidelity.path, "eval.fidelity.path")] if spec.fidelity else []
            for task in spec.tasks or []:
                files += _task_file(task.name)
        for step in [*job.variant.steps, *(job.pair_with.steps if job.pair_with else [])]:
            if step.auto_exclude is not None:
                files.append(calibration_file(step.auto_exclude.calibration.path))
            params = _params(step)
            calib = getattr(params, "calibration", None)
            if calib is not None:  # a method that reads activations (Wanda, GPTQ, static int8)
                files.append(calibration_file(calib.path))
    except BadInput:
        pass  # preflight already refused what is missing; a file gone since is a changed input all the same
    return sorted({str(p) for p in files if p is not None})


def _params(step):
    from optkit import registry

    try:
        return registry.get(step.method).Params.model_validate(step.params)
    except Exception:  # noqa: BLE001 - an unknown method or bad params fail in preflight, with their step
        return None


def _task_file(name: str) -> list[Path]:
    from optkit.evaluators.lm_eval import OFFLINE, resolve

    task, offline = resolve(name)
    if not offline:
        return []
    return [Path(os.environ["OPTKIT_DATA"]).expanduser() / OFFLINE[task.removeprefix("optkit_")]]


def _versions() -> dict:
    from optkit.evaluators.cache import EVAL_VERSION, _stack
    from optkit.version import __version__

    try:
        from importlib.metadata import version

        harness = version("lm_eval")
    except Exception:  # noqa: BLE001 - not installed: tasks cannot have run either
        harness = None
    return {"optkit": __version__, "eval": EVAL_VERSION, "lm_eval": harness, **_stack()}


def key_parts(job: VariantJob) -> dict[str, str | None]:
    """The hash of each part a result depends on (REASONS names them)."""
    from optkit.checkpoints import content_hash
    from optkit.evaluators.cache import _resolved

    variant = job.variant
    recipe = {"steps": [_resolved(s) for s in variant.steps], "engine": job.engine, "dtype": job.model.dtype,
              "device": job.device}
    source = source_hash(job.checkpoint)
    eval_ = {"spec": job.eval.model_dump(mode="json") if job.eval else None,
             "reference": (job.reference.role, Path(job.reference.path).name) if job.reference else None}
    if job.sensitivity is not None:  # a search's sensitivity job: what it scores is its own spec
        eval_["sensitivity"] = job.sensitivity.model_dump(mode="json")
    pair = job.pair_with
    spec = job.bench.model_dump(mode="json") if job.bench else None
    if spec and spec["serving"] is None:  # no serving sweep: the key it had before bench.serving existed
        del spec["serving"]
    bench = {"spec": spec,
             "pair_with": {"steps": [_resolved(s) for s in pair.steps], "engine": pair.engine} if pair else None}
    for name in ("workload", "duel"):  # the traffic timed, and a duel's two sides; absent ones leave old keys alone
        if getattr(job, name) is not None:
            bench[name] = getattr(job, name).model_dump(mode="json")
    data = {f: content_hash(f) for f in data_files(job)}
    return {"recipe": _digest(recipe), "source": source and _digest(source), "eval": _digest(eval_),
            "bench": _digest(bench), "data": _digest(data), "versions": _digest(_versions())}


def key_of(parts: dict[str, str | None]) -> str | None:
    return None if any(v is None for v in parts.values()) else _digest(parts)


def stamp(job: VariantJob) -> VariantJob:
    """The job with its key computed (in the parent: the worker only copies it into its result)."""
    parts = key_parts(job)
    return job.model_copy(update={"key": key_of(parts), "key_parts": parts})


def why_not(previous: VariantResult | None, job: VariantJob) -> str | None:
    """None when `previous` can stand for the job's result; else why it is computed again, for the progress line."""
    if previous is None:
        return "no result yet"
    if previous.status != "ok":
        return f"it {previous.status} last time"
    if job.key is None:
        unknown = [REASONS[k].split(" changed")[0] for k, v in job.key_parts.items() if v is None]
        return f"its {', '.join(unknown)} cannot be identified (a hub id's commit offline), so nothing is reused"
    if previous.key is None:
        return "the previous result has no content key (an older optkit wrote it)"
    if previous.key == job.key:
        return None
    changed = [REASONS[k] for k, v in job.key_parts.items() if previous.key_parts.get(k) != v]
    return ", ".join(changed) or "its inputs changed"


def previous(out: Path) -> VariantResult | None:
    """What a previous run left at out, or None when nothing readable is there (a damaged file is redone)."""
    from optkit.results import VariantResult

    try:
        return VariantResult.model_validate_json(out.read_text()) if out.is_file() else None
    except (OSError, ValueError):
        return None
