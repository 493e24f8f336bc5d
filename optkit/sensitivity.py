"""Sensitivity-guided fallback (`auto_exclude`): keep the layers a method hurts most in higher precision,
just enough of them to meet a perplexity budget on calibration text.

1. Rank: for each targeted Linear, transform only that layer (a swapped-in copy) and measure the mean
   KL divergence of next-token distributions from the untouched model on a few calibration samples.
   Activation outliers (e.g. at down_proj under dynamic int8) show up here, where weight statistics
   would miss them. Cost: one short forward pass per layer.
2. Choose: apply the method to a copy of the whole model with the k worst layers excluded and measure
   calibration perplexity; k grows 0, 1, 2, 4, ... until the budget holds, then bisects to the smallest
   k that holds. Every trial is end-to-end, so the budget is checked, not predicted.
"""

from __future__ import annotations

import copy
import math
import re
from types import SimpleNamespace

from optkit.calibration import calibration_batch
from optkit.recipe import AutoExcludeSpec


def _calibration_nll(model, batch, device: str) -> float:
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for chunk in batch.split(4):
            chunk = chunk.to(device)
            logits = model(input_ids=chunk).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1),
                                                    reduction="sum")
            total, count = total + nll.item(), count + chunk[:, 1:].numel()
    return total / count


def _swap(model, name: str, module):
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, module)
    return old


def _log_probs(model, batch, device: str):
    import torch

    with torch.inference_mode():
        return torch.log_softmax(model(input_ids=batch.to(device)).logits.float(), dim=-1)


def layer_kl(lm, method, params, targets: list[str], batch) -> dict[str, float]:
    """Mean KL(baseline || model with only this layer transformed) of next-token distributions.
    End-to-end, so it sees what a layer's error does to the output (a local output-error proxy misses
    layers whose output is dominated by one outlier channel)."""
    import torch

    base = _log_probs(lm.model, batch, lm.device)
    scores = {}
    for name in targets:
        shim = SimpleNamespace(model=torch.nn.Sequential(copy.deepcopy(lm.model.get_submodule(name))),
                               device=lm.device)
        method.transform(shim, params, ["0"])
        original = _swap(lm.model, name, shim.model[0])
        try:
            logp = _log_probs(lm.model, batch, lm.device)
        finally:
            _swap(lm.model, name, original)
        scores[name] = (base.exp() * (base - logp)).sum(-1).mean().item()
    return scores


def choose(lm, method, params, targets: list[str], spec: AutoExcludeSpec):
    """-> (names to keep in higher precision, details for the StepRecord, warning or None)."""
    batch = calibration_batch(lm.tokenizer, spec.calibration)
    base_nll = _calibration_nll(lm.model, batch, lm.device)
    errors = layer_kl(lm, method, params, targets, batch[: spec.rank_samples])
    ranked = sorted(targets, key=errors.get, reverse=True)
    limit = max(1, int(spec.max_excluded * len(targets)))
    trials: dict[int, float] = {}

    def increase(k: int) -> float:
        if k not in trials:
            trial = copy.deepcopy(lm.model)
            keep = set(ranked[:k])
            method.transform(SimpleNamespace(model=trial, device=lm.device, tokenizer=lm.tokenizer), params,
                             [n for n in targets if n not in keep])
            trials[k] = math.exp(_calibration_nll(trial, batch, lm.device) - base_nll) - 1
            del trial
        return trials[k]

    k, ok = 0, increase(0) <= spec.max_ppl_increase
    lo = 0
    while not ok and k < limit:
        lo, k = k, min(limit, max(1, 2 * k))
        ok = increase(k) <= spec.max_ppl_increase
    if ok and k > 0:  # bisect (lo fails, k holds) down to the smallest k that holds
        while k - lo > 1:
            mid = (lo + k) // 2
            lo, k = (lo, mid) if increase(mid) <= spec.max_ppl_increase else (mid, k)
    warning = None if ok else (f"auto_exclude: even with {k} of {len(targets)} layers kept the calibration "
                               f"perplexity rises {increase(k):+.1%}, over the {spec.max_ppl_increase:.0%} budget")
    details = {
        "budget": spec.max_ppl_increase,
        "calibration_tokens": int(batch.numel()),
        "calibration_ppl_base": math.exp(base_nll),
        "ppl_increase_without_fallback": trials[0],
        "ppl_increase_with_fallback": trials[k],
        "kept": ranked[:k],
        "trials": {str(n): round(v, 5) for n, v in sorted(trials.items())},
        "most_sensitive": [{"module": n, "kl": round(errors[n], 6)} for n in ranked[:max(10, k)]],
    }
    return ranked[:k], details, warning


def exclude_patterns(names: list[str]) -> list[str]:
    return [f"^{re.escape(n)}$" for n in names]
