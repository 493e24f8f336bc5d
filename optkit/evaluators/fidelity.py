"""Fidelity to the baseline: how far each variant's next-token distributions move from the baseline's.

The baseline's worker runs first and saves its log-probabilities (fp16) for a fixed prompt set into the run
directory; every other variant's worker loads them and compares position by position: KL(baseline || variant),
its mean and 95th percentile, and top-1 agreement. Only `lm.logits` is used, so PyTorch and ONNX Runtime
variants compare alike. Standard errors come from the spread of per-prompt means (positions of one prompt are
correlated, prompts are not).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from optkit.errors import BadInput
from optkit.recipe import FidelitySpec
from optkit.results import EvalResult

TEXT_CHARS = 400_000  # tokenize only this much of the text: plenty of room for evenly spaced prompts


def reference_name(spec: FidelitySpec, baseline: dict) -> str:
    """A file name that changes whenever the prompts or the baseline model would."""
    blob = json.dumps({"spec": spec.model_dump(), "baseline": baseline}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16] + ".pt"


def prompts(lm, spec: FidelitySpec) -> list[list[int]]:
    """`samples` prompts of `seq_len` tokens, spread evenly over the text: the same on every run."""
    from optkit.data import wikitext_test

    text, source = wikitext_test(spec.path)
    tokens = lm.encode(text[:TEXT_CHARS])
    if len(tokens) < spec.seq_len:
        raise BadInput(f"fidelity text {source} has {len(tokens)} tokens, fewer than seq_len {spec.seq_len}; "
                       "lower eval.fidelity.seq_len or give a longer text")
    count = min(spec.samples, len(tokens) // spec.seq_len)
    gap = (len(tokens) - spec.seq_len) // max(1, count - 1) if count > 1 else 0
    return [tokens[i * gap:i * gap + spec.seq_len] for i in range(count)]


def _logprobs(lm, ids: list[int]):
    import torch

    logits, _ = lm.logits(torch.tensor([ids]))
    return torch.log_softmax(logits[0].float().cpu(), dim=-1)


def save_reference(lm, spec: FidelitySpec, path: Path) -> Path:
    """Baseline side: prompt ids and their next-token log-probs (fp16 halves the file; see compare)."""
    import torch

    ids = prompts(lm, spec)
    full = [_logprobs(lm, x) for x in ids]
    logp = torch.stack([x.half() for x in full])
    top1 = torch.stack([x.argmax(-1) for x in full])  # from fp32: fp16 rounding could break near-ties
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    torch.save({"ids": torch.tensor(ids), "logp": logp, "top1": top1, "spec": spec.model_dump()}, tmp)
    os.replace(tmp, path)  # a variant never reads half a file
    return path


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def compare(lm, path: Path) -> list[EvalResult]:
    """Variant side: KL(baseline || variant) per position, its mean and p95, and top-1 agreement."""
    import torch

    ref = torch.load(path, weights_only=True)
    kls: list[float] = []
    per_kl: list[float] = []
    per_agree: list[float] = []
    for ids, stored, top1 in zip(ref["ids"].tolist(), ref["logp"], ref["top1"]):
        # renormalise the fp16 copy: its rounding then costs only a second-order KL (~1e-7), not a bias
        base = torch.log_softmax(stored.float(), dim=-1)
        new = _logprobs(lm, ids)
        kl = (base.exp() * (base - new)).sum(-1).clamp_min(0)
        agree = (top1 == new.argmax(-1)).float()
        kls += kl.tolist()
        per_kl.append(float(kl.mean()))
        per_agree.append(float(agree.mean()))
    n = len(kls)
    kl_mean, kl_se = _mean_se(per_kl)
    agree, agree_se = _mean_se(per_agree)
    spec = ref.get("spec", {})
    details = {"reference": str(path), "prompts": len(per_kl), "seq_len": spec.get("seq_len"),
               "source": spec.get("path") or "wikitext-2 test", "direction": "KL(baseline || variant), nats"}
    return [
        EvalResult(task="fidelity", metric="kl_mean", value=kl_mean, stderr=kl_se, n=n, higher_is_better=False,
                   details={**details, "per_prompt": [round(v, 6) for v in per_kl]}),
        EvalResult(task="fidelity", metric="kl_p95", value=_p95(kls), stderr=None, n=n, higher_is_better=False,
                   details=details),
        EvalResult(task="fidelity", metric="top1_agreement", value=agree, stderr=agree_se, n=n,
                   higher_is_better=True, details={**details, "per_prompt": [round(v, 5) for v in per_agree]}),
    ]
