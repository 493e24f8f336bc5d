"""Fidelity to the baseline: how far each variant's next-token distributions move from the baseline's.

The baseline's worker runs first and saves, for a fixed prompt set, its TOP_K most likely next tokens and their
log-probabilities at every position into the run directory (a few MB, where full distributions would take
~100 MB for a 49k vocabulary); every other variant's worker loads them and compares position by position:
KL(baseline || variant) over the top-k tokens plus one bucket holding the rest of the vocabulary (exact for
the coarsened distributions and a lower bound of the full KL, tight when the tail carries little mass), its
mean and 95th percentile, and top-1 agreement. Only `lm.logits` is used, so PyTorch and ONNX Runtime
variants compare alike. Standard errors come from the spread of per-prompt means (positions of one prompt are
correlated, prompts are not).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from optkit.common.sample import SAMPLE
from optkit.errors import BadInput
from optkit.recipe import FidelitySpec
from optkit.results import EvalResult
from optkit.stats import mean_se

TEXT_CHARS = 400_000  # tokenize only this much of the text: plenty of room for evenly spaced prompts
TOP_K = 256


class Reference(BaseModel):
    """The protocol between workers: the baseline's worker saves its next-token log-probs at `path`
    (role "save"); every other worker compares its own to them (role "compare")."""

    path: str
    role: Literal["save", "compare"]


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
    prefix = lm.prefix  # each prompt starts as the model expects a text to (BOS where its tokenizer adds one)
    return [prefix + tokens[i * gap:i * gap + spec.seq_len - len(prefix)] for i in range(count)]


def save_reference(lm, spec: FidelitySpec, path: Path) -> Path:
    """Baseline side: prompt ids and their next-token log-probs (fp16 halves the file; see compare)."""
    import torch

    ids = prompts(lm, spec)
    tops = [lm.top_logprobs(x, TOP_K) for x in ids]  # sorted: index 0 is the top-1 token
    ref = {"ids": torch.tensor(ids), "logp": torch.stack([v for v, _ in tops]),
           "index": torch.stack([i.int() for _, i in tops]), "spec": spec.model_dump(),
           "sample_ids": [lm.prefix + lm.encode(t) for t in SAMPLE]}  # how the baseline tokenizes (see compare)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    torch.save(ref, tmp)
    os.replace(tmp, path)  # a variant never reads half a file
    return path


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def coarse_kl(base_top, new_top):
    """KL(P || Q) per position over the top-k tokens of P plus one bucket for the rest of the vocabulary,
    from the log-probs of those k tokens under P (base_top) and Q (new_top). A token whose log-prob under Q is
    unknown (NaN: an engine that reports only its own top tokens) joins the rest bucket on both sides: the KL of
    a coarser partition, still exact for it and a lower bound of the full KL."""
    import torch

    known = ~new_top.isnan()
    new_top = new_top.nan_to_num(0.0)
    p, q = base_top.exp() * known, new_top.exp() * known
    p_rest = (1 - p.sum(-1)).clamp_min(0)
    q_rest = (1 - q.sum(-1)).clamp_min(1e-12)
    tail = torch.where(p_rest > 0, p_rest * (p_rest.clamp_min(1e-12).log() - q_rest.log()), torch.zeros_like(p_rest))
    return ((p * (base_top - new_top)).sum(-1) + tail).clamp_min(0)


def compare(lm, path: Path) -> list[EvalResult]:
    """Variant side: KL(baseline || variant) per position, its mean and p95, and top-1 agreement."""
    import torch

    ref = torch.load(path, weights_only=True)
    if "sample_ids" in ref:  # the prompts are the baseline's ids: another tokenizer would read other text from them
        ours = [lm.prefix + lm.encode(t) for t in SAMPLE]
        differ = sum(a != b for a, b in zip(ours, ref["sample_ids"]))
        if differ:
            raise BadInput(f"not compared: the variant tokenizes {differ} of {len(SAMPLE)} fixed texts differently "
                           "from the baseline, so its distributions would be compared on other ids")
    kls: list[float] = []
    per_kl: list[float] = []
    per_agree: list[float] = []
    unknown = 0
    for ids, base, index in zip(ref["ids"].tolist(), ref["logp"], ref["index"]):
        new, top1 = lm.logprobs_at(ids, index.long())
        unknown += int(new.isnan().sum())
        kl = coarse_kl(base, new)
        agree = (index[:, 0].long() == top1.long()).float()
        kls += kl.tolist()
        per_kl.append(float(kl.mean()))
        per_agree.append(float(agree.mean()))
    n = len(kls)
    kl_mean, kl_se = mean_se(per_kl)
    agree, agree_se = mean_se(per_agree)
    spec = ref.get("spec", {})
    details = {"reference": str(path), "prompts": len(per_kl), "seq_len": spec.get("seq_len"),
               "source": spec.get("path") or "wikitext-2 test", "top_k": int(ref["index"].shape[-1]),
               "direction": "KL(baseline || variant), nats, top-k tokens + one bucket for the rest",
               # baseline top-k tokens the variant's engine did not report (outside its own top-k): merged into
               # the rest bucket, so the KL is a lower bound; 0 for engines that give full distributions
               "unreported_share": unknown / max(1, ref["index"].numel())}
    return [
        EvalResult(task="fidelity", metric="kl_mean", value=kl_mean, stderr=kl_se, n=n, higher_is_better=False,
                   details={**details, "per_prompt": [round(v, 6) for v in per_kl]}),
        EvalResult(task="fidelity", metric="kl_p95", value=_p95(kls), stderr=None, n=n, higher_is_better=False,
                   details=details),
        EvalResult(task="fidelity", metric="top1_agreement", value=agree, stderr=agree_se, n=n,
                   higher_is_better=True, details={**details, "per_prompt": [round(v, 5) for v in per_agree]}),
    ]
