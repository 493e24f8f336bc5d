"""ModuleTransform: the base of PyTorch methods that change a model's modules in place. run_step wraps their
transform and records exactly which modules changed and which were skipped, and why (a step that changes
nothing is an error, never a silent no-op), and runs the auto_exclude search (auto_exclude.py) for free."""

from __future__ import annotations

import time

from optkit.engines.method import Method, Params, select, step_record
from optkit.errors import RunError
from optkit.results import SkippedModule, StepRecord

__all__ = ["ModuleTransform", "linear_names", "run_step"]


class ModuleTransform(Method):
    """A method that changes a PyTorch model's modules in place: transform() does the work, run_step records it."""

    supports_auto_exclude = True  # auto_exclude.py: any in-place module transform

    def candidates(self, model) -> list[str]:
        """Module names include/exclude select from: the nn.Linear layers."""
        return linear_names(model)

    def transform(self, lm, params: Params, targets: list[str]) -> list[SkippedModule]:
        """Change lm.model in place. Return modules deliberately left alone (with reasons); may fill self.details
        (e.g. per-layer sparsity), which run_step copies into the StepRecord."""
        raise NotImplementedError

    def apply(self, lm, params: Params, auto_exclude=None):
        return lm, run_step(self, lm, params, auto_exclude)


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
    to keep in higher precision (auto_exclude.py)."""
    started = time.perf_counter()
    targets, skipped = select(method.candidates(lm.model), params)
    fallback, notes = {}, list(method.notes)
    if auto_exclude is not None:
        from optkit.engines.torch.auto_exclude import choose, kept_reason

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


