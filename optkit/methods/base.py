"""The Method contract and the bookkeeping every method shares.

A method declares the formats it accepts and the one it produces (formats.py); check(info, params) finds
problems before heavy work; apply(lm, params, auto_exclude) returns the model to use afterwards and a
StepRecord. ModuleTransform is the base of methods that change PyTorch modules in place: run_step wraps their
transform and records exactly which modules changed and which were skipped, and why; a step that changes
nothing is an error, never a silent no-op.
"""

from __future__ import annotations

import re
import time

from pydantic import BaseModel, ConfigDict, Field, field_validator

from optkit import formats
from optkit.backends.base import ModelInfo
from optkit.errors import RunError
from optkit.results import SkippedModule, StepRecord

__all__ = ["Method", "ModelInfo", "ModuleTransform", "Params", "apply_steps", "format_problem", "run_step"]


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


class Method:
    name = "?"
    Params = Params
    accepts: tuple[str, ...] = ("hf",)  # formats this method can act on
    produces: str | formats.Format | None = None  # the format afterwards; None: the one it was given
    devices: tuple[str, ...] = ("cpu", "cuda")
    requires: tuple[str, ...] = ()  # importable modules
    extra = ""  # pip extra that brings `requires`
    device_note = ""  # said when the device cannot run the method, e.g. "needs CUDA sm_89+"
    notes: tuple[str, ...] = ()  # always recorded with the step (e.g. a deprecation)
    supports_auto_exclude = False  # whether apply() runs a sensitivity fallback when the step asks for one

    def check(self, info: ModelInfo, params: Params) -> list[str]:
        problem = format_problem(self, info)
        return [problem] if problem else []

    def output_dtype(self, info: ModelInfo, params: Params) -> str:
        return info.dtype

    def output_format(self, info: ModelInfo) -> str:
        return formats.name(self.produces) if self.produces is not None else info.format

    def bytes_per_weight(self, params: Params, in_features: int, act_bytes: float) -> float | None:
        """Bytes per weight of a targeted linear afterwards, scales included (the forecast's roofline); None:
        unchanged (dense zeros and exported weights still move). Unknown to the forecast unless overridden."""
        raise NotImplementedError

    def forecast_targets(self, linears: list[str], params: Params) -> list[str]:
        """The PyTorch linear names this step would change, for the forecast."""
        return select(linears, params)[0]

    def apply(self, lm, params: Params, auto_exclude=None):
        """-> (the model to use from now on, StepRecord)."""
        raise NotImplementedError


class ModuleTransform(Method):
    """A method that changes a PyTorch model's modules in place: transform() does the work, run_step records it."""

    supports_auto_exclude = True  # fallback/torch.py: any in-place module transform

    def candidates(self, model) -> list[str]:
        """Module names include/exclude select from: the nn.Linear layers."""
        return linear_names(model)

    def transform(self, lm, params: Params, targets: list[str]) -> list[SkippedModule]:
        """Change lm.model in place. Return modules deliberately left alone (with reasons); may fill self.details
        (e.g. per-layer sparsity), which run_step copies into the StepRecord."""
        raise NotImplementedError

    def apply(self, lm, params: Params, auto_exclude=None):
        return lm, run_step(self, lm, params, auto_exclude)


def format_problem(method: Method, info: ModelInfo, made_by: str | None = None) -> str | None:
    """Why `method` cannot take a model in info.format, or None; the fix, where a registered method converts
    the model, is added by preflight (pipeline.check_variant)."""
    if info.format in method.accepts:
        return None
    have = formats.get(info.format)
    need = " or ".join(formats.get(f).label for f in method.accepts) or "a format it does not name"
    wanted = {formats.get(f).engine for f in method.accepts}
    by = f" ({made_by})" if made_by else ""
    if have.packed and have.engine in wanted:
        return f"the model is already quantized{by}: it holds {have.label}, and {method.name} needs {need}; " \
               "use one quantization step per variant, or put this one first"
    if have.engine not in wanted:
        from optkit import registry

        def label(engine: str) -> str:
            try:
                return registry.backends.cls(engine).label
            except Exception:  # an engine not installed or unknown: its name says enough
                return engine

        return f"is a {'/'.join(label(e) for e in sorted(wanted))} method but an earlier step exported the model " \
               f"to {label(have.engine)}{by} (or the checkpoint is {have.label}); move it before that step or use " \
               f"a method for {label(have.engine)}"
    return f"needs {need}, but the model is {have.label}{by}"


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


def excluded(name: str, params: Params) -> bool:
    return not select([name], params)[0]


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


def run_step(method: ModuleTransform, lm, params: Params, auto_exclude=None) -> StepRecord:
    """Apply one in-place step and record it. auto_exclude (a recipe.AutoExcludeSpec) first picks the layers
    to keep in higher precision (fallback/torch.py)."""
    started = time.perf_counter()
    targets, skipped = select(method.candidates(lm.model), params)
    fallback, notes = {}, list(method.notes)
    if auto_exclude is not None:
        from optkit.fallback.torch import choose, kept_reason

        keep, fallback, warning = choose(lm, method, params, targets, auto_exclude)
        targets = [t for t in targets if t not in keep]
        skipped += [SkippedModule(module=n, reason=kept_reason(i, n, fallback)) for i, n in enumerate(keep, 1)]
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
    record = step_record(method, params, started, changed, skipped, notes, method.details, fallback)
    if not changed:
        raise RunError(
            f"step {method.name} changed no modules ({len(targets)} targeted, {len(skipped)} skipped); "
            "check include/exclude and that the model has layers this method supports"
        )
    return record


def step_record(method: Method, params: Params, started: float, changed: list[str],
                skipped: list[SkippedModule] = (), notes: list[str] = (), details: dict | None = None,
                fallback: dict | None = None) -> StepRecord:
    """What a step did: its params as given, its time since `started`, what it changed and skipped, and the
    auto_exclude decision, if any, under details["auto_exclude"]."""
    return StepRecord(method=method.name, params=params.model_dump(exclude_defaults=True),
                      seconds=round(time.perf_counter() - started, 3), modules_changed=list(changed),
                      modules_skipped=list(skipped), notes=list(notes),
                      details={**(details or {}), **({"auto_exclude": fallback} if fallback else {})})


def apply_steps(lm, steps, say=None) -> tuple[object, list[StepRecord]]:
    """Apply recipe steps (recipe.Step) in order; the one place variants and replayed artifacts go through.
    Returns the model to use afterwards: a conversion step replaces it (the old one can then be freed)."""
    from optkit import registry
    from optkit.progress import note

    records = []
    for n, step in enumerate(steps, 1):
        note(f"step {n}/{len(steps)}: {step.method}")
        method = registry.get(step.method)
        info = ModelInfo(linears={}, dtype=lm.dtype, device=lm.device, format=lm.format)
        problem = format_problem(method, info)
        if problem:
            raise RunError(f"step {step.method}: {problem}")
        if step.auto_exclude is not None and not method.supports_auto_exclude:
            raise RunError(f"step {step.method} does not support auto_exclude; use params.exclude")
        params = method.Params.model_validate(step.params)
        fmt = method.output_format(info)
        lm, record = method.apply(lm, params, step.auto_exclude)
        lm.format = fmt
        records.append(record)
        if say:
            say(f"step {step.method}: {len(record.modules_changed)} modules changed, "
                f"{len(record.modules_skipped)} skipped")
    return lm, records
