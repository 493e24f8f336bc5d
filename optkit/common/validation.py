"""What every export and conversion checks before its model is measured: the new engine's logits against the
PyTorch model it came from, on fixed random prompts, full forward and cache path (ONNX export, GGUF export,
the llm-compressor reload check use the same prompts)."""

from __future__ import annotations

from optkit.errors import RunError

PROMPTS, PROMPT_LEN = 3, 16


def validate(torch_lm, new_lm, params, what: str = "ONNX export") -> dict:
    """Compare logits on fixed random prompts (any exported LoadedModel against the PyTorch one it came from;
    params: anything with atol, rtol, min_top1); raise RunError naming the numbers when out of tolerance."""
    import torch

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, torch_lm.vocab_size, (PROMPTS, PROMPT_LEN), generator=gen)
    ref, _ = torch_lm.logits(ids)
    ref = ref.cpu()
    got, _ = new_lm.logits(ids)
    diff = (got - ref).abs()
    scale = float(ref.abs().max())
    # the cache path that decoding uses: prefill all but the last token, then one step
    _, past = new_lm.start(ids[:, :-1])
    stepped, _ = new_lm.step(ids[:, -1:], past)
    out = {
        "prompts": f"{PROMPTS} x {PROMPT_LEN} random token ids (seed 0)",
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(diff.max()) / max(scale, 1e-12),  # relative to the largest |logit|
        "top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
        "cache_max_abs_diff": float((stepped - ref[:, -1]).abs().max()),
        "allowed_abs_diff": params.atol + params.rtol * scale,
    }
    worst = max(out["max_abs_diff"], out["cache_max_abs_diff"])
    if worst > out["allowed_abs_diff"] or out["top1_agreement"] < params.min_top1:
        raise RunError(
            f"{what} does not match PyTorch: max |diff| {worst:.3g} (allowed {out['allowed_abs_diff']:.3g}), "
            f"top-1 agreement {out['top1_agreement']:.1%} (needed {params.min_top1:.0%}); "
            "raise params.atol/rtol if this is expected (e.g. fp16), else report the model as unsupported")
    return out
