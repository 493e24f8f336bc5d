"""Token-level perplexity with a sliding window.

Each window of `window` tokens advances by `stride`; only tokens not scored by an earlier window are
scored, so each token gets between window-stride and window-1 tokens of context. Every window starts with
the special tokens the model's tokenizer puts before a text (lm.prefix: BOS for Llama, Gemma, Mistral;
nothing for Qwen), also when it starts mid-text, since that is what the model saw in training; those
positions are context, never scored. With a prefix the first token of the text is scored too. The standard error
comes from the spread of the mean NLL over consecutive blocks of scored tokens (128, fewer for short
texts), carried to perplexity by the delta method.
"""

from __future__ import annotations

import hashlib
import json
import math

from optkit.errors import BadInput
from optkit.recipe import PerplexitySpec
from optkit.results import EvalResult

BLOCK = 128


def token_nlls(lm, tokens: list[int], window: int, stride: int, prefix: list[int] = ()) -> list[float]:
    """NLL of every token that has context: all of them after a prefix, else all but the first. The first
    window scores all it can; each later window ends `stride` tokens further and scores only its new tokens,
    so each token is scored exactly once, with at least window - stride positions of context (stride is capped
    so no token lacks context). `prefix` (the model's BOS) leads every window and takes its share of it."""
    prefix = list(prefix)
    room = window - len(prefix)  # text tokens per window
    step = min(stride, room - 1)
    nlls: list[float] = []
    lo, hi = (0 if prefix else 1), min(room, len(tokens))
    while lo < len(tokens):
        start = max(0, hi - room)
        logp = lm.token_logprobs(prefix + tokens[start:hi])
        nlls.extend(-x for x in logp[len(prefix) + lo - start - 1:])
        lo, hi = hi, min(hi + step, len(tokens))
    return nlls


def block_size(n: int) -> int:
    """128 tokens, smaller for short texts so there are at least ~8 blocks (never under 16 tokens)."""
    return min(BLOCK, max(16, n // 8))


def summarize(nlls: list[float], block: int | None = None) -> tuple[float, float | None, float]:
    """-> (perplexity, its standard error, mean nll)."""
    block = block or block_size(len(nlls))
    mean = sum(nlls) / len(nlls)
    blocks = [nlls[i:i + block] for i in range(0, len(nlls) - block + 1, block)]
    se = None
    if len(blocks) >= 2:
        means = [sum(b) / len(b) for b in blocks]
        m = sum(means) / len(means)
        var = sum((x - m) ** 2 for x in means) / (len(means) - 1)
        se = math.exp(mean) * math.sqrt(var / len(means))
    return math.exp(mean), se, mean


def evaluate(lm, spec: PerplexitySpec) -> list[EvalResult]:
    from optkit.data import wikitext_test

    text, source = wikitext_test(spec.path)
    tokens = lm.encode(text)[: spec.max_tokens]
    if len(tokens) < 2:
        raise BadInput(f"perplexity text {source} has fewer than 2 tokens; give a longer text")
    nlls = token_nlls(lm, tokens, spec.window, spec.stride, lm.prefix)
    scored = hashlib.sha256(json.dumps([lm.prefix, tokens]).encode()).hexdigest()[:16]
    ppl, se, mean = summarize(nlls)
    block = block_size(len(nlls))
    blocks = [sum(nlls[i:i + block]) / block for i in range(0, len(nlls) - block + 1, block)]
    return [EvalResult(
        task="wikitext-2" if spec.path is None else "text-file",
        metric="token_perplexity", value=ppl, stderr=se, n=len(nlls), higher_is_better=False,
        details={"source": source, "mean_nll": mean, "window": spec.window, "stride": spec.stride,
                 "special_tokens": lm.special_tokens_rule(),
                 # which ids were scored: perplexities of two variants compare only when these are equal
                 "tokens": scored,
                 "stderr_block_tokens": block,
                 # per-block mean NLL on the same tokens for every variant: paired comparisons need them
                 "block_nll": [round(b, 6) for b in blocks]},
    )]


def cache_what(spec: PerplexitySpec) -> dict:
    """What the result depends on besides the model: the settings and the text file (hub text: its name)."""
    import os
    from pathlib import Path

    root = os.environ.get("OPTKIT_DATA")
    path = Path(spec.path).expanduser() if spec.path else Path(root) / "wikitext-2" / "test.txt" if root else None
    text = "hub: wikitext-2-raw-v1 test"
    if path is not None and path.is_file():
        st = path.stat()
        text = [str(path.resolve()), st.st_size, st.st_mtime_ns]
    return {"kind": "perplexity", "spec": spec.model_dump(), "text": text}
