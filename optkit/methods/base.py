"""The Transform contract and the bookkeeping every method shares.

check(info, params) finds problems before heavy work; transform(lm, params, targets) changes the model.
run_step wraps transform and records exactly which modules changed and which were skipped, and why:
a step that changes nothing is an error, never a silent no-op.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, field_validator

from optkit.errors import RunError
from optkit.results import SkippedModule, StepRecord


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include: list[str] = Field(default_factory=list, description="regexes on module names; empty = all")
    exclude: list[str] = Field(default_factory=list, description="regexes on module names to leave alone")

    @field_validator("include", "exclude")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"bad regex {p!r}: {exc}") from None
        return patterns


@dataclass
class ModelInfo:
    """What preflight knows about a model without its weights: linear shapes and the current dtype."""

    linears: dict[str, tuple[int, int]]  # name -> (out_features, in_features)
    dtype: str
    device: str
    quantized: bool = False
    onnx: bool = False  # an earlier step exported it: only onnxruntime methods may follow
    notes: list[str] = field(default_factory=list)


class Method:
    name = "?"
    Params = Params
    devices: tuple[str, ...] = ("cpu", "cuda")
    requires: tuple[str, ...] = ()  # importable modules
    extra = ""  # pip extra that brings `requires`
    linear_only = True
    quantizes = True  # False for casts and pruning: later quantization steps may still follow
    device_note = ""  # said when the device cannot run the method, e.g. "needs CUDA sm_89+"
    notes: tuple[str, ...] = ()  # always recorded with the step (e.g. a deprecation)
    details: dict = {}  # filled by transform, copied to StepRecord.details
    runs_on = "torch"  # the loaded-model backend the step needs (lm.backend): "torch" or "onnxruntime"
    to_onnx = False  # True for exporters: preflight then knows the model is ONNX from here on
    replaces_model = False  # True: convert(lm, params) -> (new_lm, StepRecord) is called instead of transform
    convert_auto_exclude = False  # True: convert(lm, params, auto_exclude) runs its own fallback (ONNX Runtime)

    def check(self, info: ModelInfo, params: Params) -> list[str]:
        return []

    def output_dtype(self, info: ModelInfo, params: Params) -> str:
        return info.dtype

    def transform(self, lm, params: Params, targets: list[str]) -> list[SkippedModule]:
        """Change the model in place. Return modules deliberately left alone (with reasons); may fill
        self.details (e.g. per-layer sparsity), which run_step copies into the StepRecord."""
        raise NotImplementedError

    def convert(self, lm, params: Params):
        """For replaces_model methods (export, ONNX quantization): return (new loaded model, StepRecord);
        the method records what changed itself, since torch module fingerprints mean nothing there."""
        raise NotImplementedError


def select(names: list[str], params: Params) -> tuple[list[str], list[SkippedModule]]:
    targets, skipped = [], []
    for name in names:
        if params.include and not any(re.search(p, name) for p in params.include):
            continue
        hit = next((p for p in params.exclude if re.search(p, name)), None)
        if hit:
            skipped.append(SkippedModule(module=name, reason=f"excluded by pattern {hit!r}"))
        else:
            targets.append(name)
    return targets, skipped


def linear_names(model) -> list[str]:
    import torch

    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def _fingerprint(model) -> dict[str, tuple]:
    """Per module: its class, its weight's type and dtype, and for plain tensors the count of non-zeros,
    so casts, module swaps, tensor-subclass quantization and pruning all show up as a change."""
    import torch

    out = {}
    for name, mod in model.named_modules():
        weight = getattr(mod, "weight", None)
        if callable(weight):  # dynamic quantized Linear exposes weight() as a method
            weight = weight()
        if weight is None and not list(mod.parameters(recurse=False)):
            continue
        wkey = None
        if weight is not None:
            plain = type(weight) in (torch.Tensor, torch.nn.Parameter) and not weight.is_quantized
            nonzero = int(torch.count_nonzero(weight)) if plain and weight.device.type != "meta" else None
            wkey = (type(weight).__name__, str(getattr(weight, "dtype", None)), nonzero)
        out[name] = (type(mod).__name__, wkey)
    return out


def run_step(method: Method, lm, params: Params, auto_exclude=None) -> StepRecord:
    """Apply one step and record it. auto_exclude (a recipe.AutoExcludeSpec) first picks the layers to keep
    in higher precision (see sensitivity.py)."""
    started = time.perf_counter()
    names = linear_names(lm.model) if method.linear_only else [n for n, _ in lm.model.named_modules() if n]
    targets, skipped = select(names, params)
    fallback, notes = {}, list(method.notes)
    if auto_exclude is not None:
        from optkit.sensitivity import choose

        keep, fallback, warning = choose(lm, method, params, targets, auto_exclude)
        facts = {m["module"]: m for m in fallback["most_sensitive"]}

        def why(i: int, n: str) -> str:
            m = facts.get(n, {})
            saves = f", saves {m['decode_ms_saved']:.3f} ms/token" if "decode_ms_saved" in m else ""
            return (f"kept in higher precision by auto_exclude (rank {i}, KL {m.get('kl', float('nan')):.3g} "
                    f"when quantized alone{saves})")

        targets = [t for t in targets if t not in keep]
        skipped += [SkippedModule(module=n, reason=why(i, n)) for i, n in enumerate(keep, 1)]
        notes += [warning] if warning else []
    before = _fingerprint(lm.model)
    method.details = {}
    skipped += method.transform(lm, params, targets)
    after = _fingerprint(lm.model)
    changed = [n for n in after if before.get(n) != after[n]]
    reported = {s.module for s in skipped}
    for name in targets:
        if name not in changed and name not in reported and name in after:
            skipped.append(SkippedModule(module=name, reason="the method left it unchanged"))
    record = StepRecord(
        method=method.name,
        params=params.model_dump(exclude_defaults=True),
        seconds=round(time.perf_counter() - started, 3),
        modules_changed=changed,
        modules_skipped=skipped,
        notes=notes,
        details={**method.details, **({"auto_exclude": fallback} if fallback else {})},
    )
    if not changed:
        raise RunError(
            f"step {method.name} changed no modules ({len(targets)} targeted, {len(skipped)} skipped); "
            "check include/exclude and that the model has layers this method supports"
        )
    return record


def apply_steps(lm, steps, say=None) -> tuple[object, list[StepRecord]]:
    """Apply recipe steps (recipe.Step) in order; the one place both variants and artifacts go through.
    Returns the model to use afterwards: a step like onnx.export replaces it (the old one can then be freed)."""
    from optkit import registry

    records = []
    for step in steps:
        method = registry.get(step.method)
        if getattr(lm, "backend", "torch") != method.runs_on:
            raise RunError(f"step {step.method} needs a {method.runs_on} model but has a {lm.backend} one; "
                           "put ort.* steps after onnx.export and PyTorch steps before it")
        params = method.Params.model_validate(step.params)
        if method.replaces_model:
            if step.auto_exclude is not None and not method.convert_auto_exclude:
                raise RunError(f"step {step.method} does not support auto_exclude; use params.exclude")
            fallback = (step.auto_exclude,) if step.auto_exclude is not None else ()
            lm, record = method.convert(lm, params, *fallback)
        else:
            record = run_step(method, lm, params, step.auto_exclude)
        records.append(record)
        if say:
            say(f"step {step.method}: {len(record.modules_changed)} modules changed, "
                f"{len(record.modules_skipped)} skipped")
    return lm, records
