"""What both fallbacks share: calibration NLL and next-token log-probs through lm.logits (so the same code
scores PyTorch and ONNX Runtime trials), the KL between them, and the grow/bisect search for the fewest
layers to keep."""

from __future__ import annotations

import math
import re

CHUNK = 4  # calibration samples per forward pass


def nll(lm, batch) -> float:
    """Mean next-token negative log-likelihood of a [samples, seq_len] batch of token ids."""
    import torch

    total, count = 0.0, 0
    for chunk in batch.split(CHUNK):
        logits, _ = lm.logits(chunk)
        logits = logits[:, :-1].float()
        target = chunk[:, 1:].to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                 reduction="sum")
        total, count = total + loss.item(), count + target.numel()
    return total / count


def log_probs(lm, batch):
    import torch

    return torch.log_softmax(lm.logits(batch)[0].float(), dim=-1)


def kl(base, logp) -> float:
    """Mean KL(base || logp) over positions, from log-probs."""
    return float((base.exp() * (base - logp)).sum(-1).mean())


def ppl_increase(lm, batch, base_nll: float) -> float:
    """Relative calibration-perplexity change of lm against a baseline NLL."""
    return math.exp(nll(lm, batch) - base_nll) - 1


def search(ranked: list[str], increase, limit: int, budget: float) -> tuple[int, bool]:
    """Smallest k (keep ranked[:k]) whose end-to-end increase holds the budget: grow 0, 1, 2, 4, ... then bisect."""
    k, ok, lo = 0, increase(ranked, 0) <= budget, 0
    while not ok and k < limit:
        lo, k = k, min(limit, max(1, 2 * k))
        ok = increase(ranked, k) <= budget
    if ok and k > 0:  # lo fails, k holds
        while k - lo > 1:
            mid = (lo + k) // 2
            lo, k = (lo, mid) if increase(ranked, mid) <= budget else (mid, k)
    return k, ok


def exclude_patterns(names: list[str]) -> list[str]:
    return [f"^{re.escape(n)}$" for n in names]
