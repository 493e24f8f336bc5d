"""auto_exclude for ONNX Runtime quantization (ort.dynamic_int8, ort.static_int8, ort.int4): keep the nodes a
step hurts most in float, just enough of them to meet the perplexity budget, measured through onnxruntime.

Quantizing one node at a time costs a whole-model quantize per node (211 for SmolLM2), so ranking is
bounded and coarse-to-fine:

1. Groups: nodes by projection (q/k/v/o/gate/up/down/lm_head: the name part before the op). Quantize only
   one group, measure the KL of next-token distributions from the float model on rank_samples
   calibration samples. One quantize + one short pass per group.
2. Nodes: within the worst group with more than one node, quantize each node alone (one pass per layer).
   Other groups' nodes get an estimate, group KL x that layer's share of the worst group's KL: layers
   that suffer in one projection tend to suffer in others. A one-node group (lm_head) is measured exactly.
3. Choose: quantize the whole model with the k top-ranked nodes kept in float and measure calibration
   perplexity end to end; k grows 0, 1, 2, 4, ... then bisects to the smallest k within budget, as
   sensitivity.choose does for PyTorch methods. Every trial is measured, never predicted.

k = 0 is measured first: when the fully quantized model already meets the budget, nothing is ranked.
Otherwise the cost is groups + layers + about 2 log2(k) quantizations (SmolLM2-135M: about 45, ~10 s each
on 2 CPU cores); static int8 calibrates once (cached) for all of them.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from pathlib import Path

from optkit.calibration import calibration_batch
from optkit.common.auto_exclude import kl as mean_kl
from optkit.common.auto_exclude import log_probs, nll, ppl_increase, search
from optkit.progress import note
from optkit.recipe import AutoExcludeSpec

LAYER = re.compile(r"layers?[./_](\d+)")


def group_of(node: str) -> str:
    """'/model/layers.3/self_attn/q_proj/MatMul' -> 'q_proj'; '/lm_head/MatMul' -> 'lm_head'."""
    parts = [p for p in node.split("/") if p]
    return parts[-2] if len(parts) > 1 else parts[0]


def layer_of(node: str) -> int | None:
    m = LAYER.search(node)
    return int(m.group(1)) if m else None


class _Trials:
    """Builds quantized variants of lm in workdir, measures them, and deletes their files."""

    def __init__(self, lm, method, params, excluded: list[str], workdir: Path):
        self.lm, self.method, self.params, self.excluded, self.workdir = lm, method, params, excluded, workdir
        self.runs = 0

    def measure(self, quantized: list[str], fn):
        path = self.method.build(self.lm, self.params, quantized, self.excluded, self.workdir)
        self.runs += 1
        note(f"auto_exclude: quantization {self.runs} measured ({len(quantized)} nodes quantized)")
        try:
            trial = self.lm.with_model(path)
            value = fn(trial)
            del trial
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)
        return value


def rank(trials: _Trials, targets: list[str], batch) -> tuple[list[str], dict[str, dict], dict[str, float]]:
    """-> (targets most sensitive first, per node {kl, scored_as}, KL per group)."""
    base = log_probs(trials.lm, batch)

    def kl(nodes: list[str]) -> float:
        return trials.measure(nodes, lambda m: mean_kl(base, log_probs(m, batch)))

    groups: dict[str, list[str]] = {}
    for n in targets:
        groups.setdefault(group_of(n), []).append(n)
    group_kl = {g: kl(nodes) for g, nodes in groups.items()}
    facts = {nodes[0]: {"kl": group_kl[g], "scored_as": "alone"} for g, nodes in groups.items() if len(nodes) == 1}
    multi = [g for g in sorted(group_kl, key=group_kl.get, reverse=True) if len(groups[g]) > 1]
    share: dict[int | None, float] = {}
    if multi:
        worst = multi[0]
        alone = {n: kl([n]) for n in groups[worst]}
        facts.update({n: {"kl": v, "scored_as": "alone"} for n, v in alone.items()})
        total = sum(max(v, 0.0) for v in alone.values())
        share = {layer_of(n): max(v, 0.0) / total for n, v in alone.items()} if total > 0 else {}
    for g, nodes in groups.items():
        for n in nodes:
            if n not in facts:  # estimated: the group's KL spread like the worst group's layer profile
                part = share.get(layer_of(n), 1 / len(nodes))
                facts[n] = {"kl": group_kl[g] * part, "scored_as": f"estimated from group {g}"}
    ranked = sorted(targets, key=lambda n: facts[n]["kl"], reverse=True)
    return ranked, facts, group_kl


def choose(lm, method, params, targets: list[str], excluded: list[str], spec: AutoExcludeSpec, workdir: Path):
    """-> (nodes to keep in float, details for StepRecord.details["auto_exclude"], warning or None)."""
    started = time.perf_counter()
    batch = calibration_batch(lm, spec.calibration)
    trials = _Trials(lm, method, params, excluded, workdir)
    base_nll = nll(lm, batch)
    ranked, facts, group_kl = list(targets), {}, {}
    limit = max(1, int(spec.max_excluded * len(targets)))
    increases: dict[int, float] = {}

    def increase(k: int) -> float:
        if k not in increases:
            keep = set(ranked[:k])
            rest = [n for n in targets if n not in keep]
            # everything kept: nothing to quantize, the float model itself
            increases[k] = trials.measure(rest, lambda m: ppl_increase(m, batch, base_nll)) if rest else 0.0
        return increases[k]

    if increase(0) > spec.max_ppl_increase:  # ranking costs most runs: only when fully quantized misses the budget
        ranked, facts, group_kl = rank(trials, targets, batch[: spec.rank_samples])
    k, ok = search(ranked, lambda _ranked, n: increase(n), limit, spec.max_ppl_increase)
    warning = None if ok else (f"auto_exclude: even with {k} of {len(targets)} nodes kept in float the calibration "
                               f"perplexity rises {increase(k):+.1%}, over the {spec.max_ppl_increase:.0%} budget "
                               f"(max_excluded {spec.max_excluded:.0%} allows at most {limit})")
    details = {
        "budget": spec.max_ppl_increase,
        "calibration_tokens": int(batch.numel()),
        "calibration_ppl_base": math.exp(base_nll),
        "ppl_increase_without_fallback": increases[0],
        "ppl_increase_with_fallback": increases[k],
        "kept": ranked[:k],
        "trials": {str(n): round(v, 5) for n, v in sorted(increases.items())},
        "most_sensitive": [{"module": n, "kl": round(facts[n]["kl"], 6), "scored_as": facts[n]["scored_as"]}
                           for n in ranked[:max(10, k)] if n in facts],
        "ranking": ("KL per projection group, then per node in the worst multi-node group (onnxruntime)" if facts
                    else "none: the budget holds with every node quantized"),
        "group_kl": {g: round(v, 6) for g, v in sorted(group_kl.items(), key=lambda x: -x[1])},
        "quantize_runs": trials.runs,
        "cost": "none (onnxruntime fallback ranks by KL alone)",
        "seconds": round(time.perf_counter() - started, 3),
    }
    return ranked[:k], details, warning


def kept_reason(rank_: int, node: str, details: dict) -> str:
    fact = next((m for m in details["most_sensitive"] if m["module"] == node), {})
    how = " when quantized alone" if fact.get("scored_as") == "alone" else f", {fact.get('scored_as', 'unscored')}"
    return f"kept in higher precision by auto_exclude (rank {rank_}, KL {fact.get('kl', float('nan')):.3g}{how})"
