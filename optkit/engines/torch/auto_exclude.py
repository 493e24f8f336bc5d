"""Sensitivity-guided fallback (`auto_exclude`): keep the layers a method hurts most in higher precision,
just enough of them to meet a perplexity budget on calibration text.

1. Rank: for each targeted Linear, transform only that layer (a swapped-in copy) and measure the mean
   KL divergence of next-token distributions from the untouched model on a few calibration samples.
   Activation outliers (e.g. at down_proj under dynamic int8) show up here, where weight statistics
   would miss them. Cost: one short forward pass per layer.
2. Cost (cost: time, the default): what quantizing each layer saves, timed in place while the model
   decodes (forward hooks; the original and a fully transformed copy, interleaved). In place matters: a
   layer timed alone sits in cache and looks cheap. Layers are then ranked by KL per ms saved, so the
   fallback first keeps layers that are sensitive but save little (on CPU, dynamic int8 makes the small
   attention projections slower, not faster) and quantizes the ones that carry the speed-up (lm_head,
   the MLP). With cost: none the ranking is by KL alone.
3. Choose: apply the method to a copy of the whole model with the k first-ranked layers excluded and
   measure calibration perplexity; k grows 0, 1, 2, 4, ... until the budget holds, then bisects to the
   smallest k that holds. Every trial is end-to-end, so the budget is checked, not predicted. With
   cost: time this runs along both orders (KL per ms, KL alone): per-layer savings do not add up exactly
   and one expensive layer can matter more than many cheap ones, so the two candidates that meet the
   budget are built and timed, and the faster one wins.
"""

from __future__ import annotations

import copy
import math
import statistics
import time

from optkit.calibration import calibration_batch
from optkit.common.auto_exclude import kl, log_probs, nll, ppl_increase, search
from optkit.progress import Counter
from optkit.recipe import AutoExcludeSpec


def _swap(model, name: str, module):
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, module)
    return old


def layer_kl(lm, method, params, targets: list[str], batch) -> dict[str, float]:
    """Mean KL(baseline || model with only this layer transformed) of next-token distributions.
    End-to-end, so it sees what a layer's error does to the output (a local output-error proxy misses
    layers whose output is dominated by one outlier channel)."""
    import torch

    base = log_probs(lm, batch)
    scores = {}
    with Counter("auto_exclude: KL of each layer quantized alone", len(targets)) as count:
        for name in targets:
            one = lm.with_model(torch.nn.Sequential(copy.deepcopy(lm.model.get_submodule(name))))
            method.transform(one, params, ["0"])
            original = _swap(lm.model, name, one.model[0])
            try:
                scores[name] = kl(base, log_probs(lm, batch))
            finally:
                _swap(lm.model, name, original)
            count.advance()
    return scores


def _decode_layer_ms(model, names: list[str], device: str, prompt, steps: int) -> dict[str, float]:
    """Median wall time of each named module per decode step, measured inside real decoding (so each layer
    reads its weights from memory as it would when serving, not from a warm cache)."""
    import torch
    from transformers import DynamicCache

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    started: dict[str, float] = {}
    times: dict[str, list[float]] = {n: [] for n in names}
    on = [False]

    def pre(name):
        def hook(_mod, _args):
            if on[0]:
                sync()
                started[name] = time.perf_counter()
        return hook

    def post(name):
        def hook(_mod, _args, _out):
            if on[0]:
                sync()
                times[name].append(time.perf_counter() - started[name])
        return hook

    handles = []
    for n in names:
        mod = model.get_submodule(n)
        handles += [mod.register_forward_pre_hook(pre(n)), mod.register_forward_hook(post(n))]
    try:
        with torch.inference_mode():
            out = model(input_ids=prompt.to(device), past_key_values=DynamicCache(), use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            for i in range(steps + 2):
                on[0] = i >= 2  # two warm-up steps
                out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
                token = out.logits[:, -1:].argmax(-1)
    finally:
        for h in handles:
            h.remove()
    return {n: statistics.median(v) * 1e3 for n, v in times.items() if v}


def decode_savings(lm, method, params, targets: list[str], rounds: int = 3, steps: int = 8) -> dict[str, float]:
    """ms of decode time per token each target saves when transformed (negative: it got slower), measured
    in place on the original and a fully transformed copy, interleaved; the fastest round of each counts."""
    import torch

    trial = copy.deepcopy(lm.model)
    method.transform(lm.with_model(trial), params, targets)
    prompt = torch.randint(3, lm.model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    before: dict[str, list[float]] = {n: [] for n in targets}
    after: dict[str, list[float]] = {n: [] for n in targets}
    with Counter("auto_exclude: decode time each layer saves (rounds)", rounds) as count:
        for _ in range(rounds):
            for model, into in ((lm.model, before), (trial, after)):
                for n, ms in _decode_layer_ms(model, targets, lm.device, prompt, steps).items():
                    into[n].append(ms)
            count.advance()
    del trial
    return {n: min(before[n]) - min(after[n]) for n in targets if before[n] and after[n]}


def rank(targets: list[str], kl: dict[str, float], saved: dict[str, float] | None) -> list[str]:
    """Order in which to keep layers in higher precision: by KL alone, or by KL per ms saved (a layer that
    saves (almost) nothing costs (almost) nothing to keep, so it comes first)."""
    if not saved:
        return sorted(targets, key=kl.get, reverse=True)
    floor = max(1e-3 * max([v for v in saved.values() if v > 0], default=1.0), 1e-9)
    return sorted(targets, key=lambda n: kl[n] / max(saved.get(n, 0.0), floor), reverse=True)


def decode_tokens_per_s(models: list, device: str, prompt, steps: int = 16, rounds: int = 3) -> list[float]:
    """Batch-1 decode speed of each model, interleaved rounds, the fastest round of each (least disturbed)."""
    import torch
    from transformers import DynamicCache

    best = [0.0] * len(models)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(rounds):
        for i, model in enumerate(models):
            with torch.inference_mode():
                out = model(input_ids=prompt.to(device), past_key_values=DynamicCache(), use_cache=True)
                token = out.logits[:, -1:].argmax(-1)
                sync()
                t0 = time.perf_counter()
                for _ in range(steps):
                    out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
                    token = out.logits[:, -1:].argmax(-1)
                sync()
                best[i] = max(best[i], steps / (time.perf_counter() - t0))
    return best


def choose(lm, method, params, targets: list[str], spec: AutoExcludeSpec):
    """-> (names to keep in higher precision, details for the StepRecord, warning or None).

    With cost: time two orders are searched, KL per ms saved and KL alone (per-layer savings do not add up
    exactly, and one expensive layer can matter more than many cheap ones); of those that meet the budget,
    the one whose model decodes fastest (measured) wins."""
    import torch

    batch = calibration_batch(lm, spec.calibration)
    base_nll = nll(lm, batch)
    errors = layer_kl(lm, method, params, targets, batch[: spec.rank_samples])
    saved = decode_savings(lm, method, params, targets) if spec.cost == "time" else None
    orders = {"kl": rank(targets, errors, None)}
    if saved:
        orders = {"kl_per_ms_saved": rank(targets, errors, saved), **orders}
    limit = max(1, int(spec.max_excluded * len(targets)))
    trials: dict[frozenset, float] = {}

    def build(keep: set):
        trial = lm.with_model(copy.deepcopy(lm.model))
        method.transform(trial, params, [n for n in targets if n not in keep])
        return trial

    def increase(ranked: list[str], k: int) -> float:
        keep = frozenset(ranked[:k])
        if keep not in trials:
            trial = build(keep)
            trials[keep] = ppl_increase(trial, batch, base_nll)
            del trial
            count.advance()
        return trials[keep]

    with Counter("auto_exclude: calibration-perplexity trials (grow, then bisect)") as count:
        found = {label: search(ranked, increase, limit, spec.max_ppl_increase) for label, ranked in orders.items()}
    feasible = [label for label, (_, ok) in found.items() if ok]
    speeds: dict[str, float] = {}
    if len(feasible) > 1:
        prompt = torch.randint(3, lm.model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
        built = [build(set(orders[label][:found[label][0]])) for label in feasible]
        speeds = dict(zip(feasible, decode_tokens_per_s([b.model for b in built], lm.device, prompt)))
        del built
        chosen = max(feasible, key=speeds.get)
    else:
        chosen = feasible[0] if feasible else min(orders, key=lambda lb: increase(orders[lb], found[lb][0]))
    ranked, (k, ok) = orders[chosen], found[chosen]
    warning = None if ok else (f"auto_exclude: even with {k} of {len(targets)} layers kept the calibration "
                               f"perplexity rises {increase(ranked, k):+.1%}, over the {spec.max_ppl_increase:.0%} "
                               "budget")
    details = {
        "budget": spec.max_ppl_increase,
        "calibration_tokens": int(batch.numel()),
        "calibration_ppl_base": math.exp(base_nll),
        "ppl_increase_without_fallback": increase(ranked, 0),
        "ppl_increase_with_fallback": increase(ranked, k),
        "kept": ranked[:k],
        "cost": spec.cost,
        "order": chosen,
        "orders": {label: {"kept": n, "meets_budget": good, "ppl_increase": round(increase(orders[label], n), 5),
                           **({"decode_tokens_per_s": round(speeds[label], 2)} if label in speeds else {}),
                           "trials": {str(j): round(v, 5) for j in range(len(targets) + 1)
                                      if (v := trials.get(frozenset(orders[label][:j]))) is not None}}
                   for label, (n, good) in found.items()},
        "trials": {str(j): round(v, 5) for j in range(len(targets) + 1)
                   if (v := trials.get(frozenset(ranked[:j]))) is not None},
        "most_sensitive": [{"module": n, "kl": round(errors[n], 6),
                            **({"decode_ms_saved": round(saved[n], 4)} if saved and n in saved else {})}
                           for n in ranked[:max(10, k)]],
    }
    if saved:
        total = sum(saved.values())
        details["decode_ms_saved_all_quantized"] = round(total, 3)
        details["decode_ms_saved_with_fallback"] = round(total - sum(saved.get(n, 0.0) for n in ranked[:k]), 3)
    return ranked[:k], details, warning


def kept_reason(rank_: int, name: str, details: dict) -> str:
    facts = {m["module"]: m for m in details["most_sensitive"]}
    m = facts.get(name, {})
    saves = f", saves {m['decode_ms_saved']:.3f} ms/token" if "decode_ms_saved" in m else ""
    return (f"kept in higher precision by auto_exclude (rank {rank_}, KL {m.get('kl', float('nan')):.3g} "
            f"when quantized alone{saves})")
