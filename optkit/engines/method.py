"""The Method contract and the bookkeeping every method shares.

A method declares the formats it accepts and the one it produces (formats.py); check(info, params) finds
problems before heavy work; apply(lm, params, auto_exclude) returns the model to use afterwards and a
StepRecord. apply_steps is the one place variants and replayed artifacts go through. Methods live in their
engine's folder (engines/<engine>/); PyTorch's in-place transforms share engines/torch/transform.py.
"""

from __future__ import annotations

import re
import time

from pydantic import BaseModel, ConfigDict, Field, field_validator

from optkit import formats
from optkit.engines.base import ModelInfo
from optkit.errors import RunError
from optkit.results import SkippedModule, StepRecord

__all__ = ["Method", "ModelInfo", "Params", "apply_steps", "format_problem", "select", "step_record"]


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
    unpriced_build = False  # its build takes a time the forecast cannot price (llm-compressor's calibrated passes:
    # GPTQ after SmoothQuant on SmolLM2 took 18 minutes on 2 cores): progress lines give no guess until a variant ends

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
                return registry.engines.cls(engine).label
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
