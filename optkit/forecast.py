"""Before anything is built: each variant's expected batch-1 decode speed from the roofline.

A decode step at batch 1 reads every linear weight once, one embedding row and the KV cache, so on a
memory-bound device tokens/s <= bandwidth / bytes per token. Bytes per weight follow from each step: each
method states them (Method.bytes_per_weight: int8 1 + scales, int4 0.5 + group scales; pruning and exports
change nothing, since dense zeros still move) and float weights follow the dtype. The result is an upper
bound: real kernels add compute and overhead, and at batch sizes past the ridge point decode is compute-bound
and weight-only quantization stops helping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ELEM = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Expected:
    name: str
    bytes_per_weight: float  # mean over the linear layers
    bytes_per_token: float
    bound_tokens_per_s: float
    kv_bytes: float = 0.0  # KV cache of one sequence at the mean decode context
    speedup: float = 1.0
    compute_bound_from: int | None = None  # smallest batch size past the ridge point
    notes: list[str] = field(default_factory=list)


@dataclass
class Forecast:
    bandwidth_gb_s: float
    matmul_gflop_s: float
    measured: str  # "now" or where the cached measurement came from
    context: int
    baseline: str
    variants: list[Expected]
    note: str = ""
    params: int = 0  # the linear layers' weights (eta.py prices evaluation and prefill from them)


def expected(variant, linears: dict[str, tuple[int, int]], dtype: str, config, context: int,
             bandwidth_gb_s: float, file_bytes_per_weight: float | None = None) -> Expected:
    """Bytes moved per decoded token at batch 1 after the variant's steps, and the bound they imply.
    file_bytes_per_weight: a GGUF checkpoint's average (file size / weights), for a variant that starts in
    llama.cpp and so keeps the file's own types instead of the dtype PyTorch loads it in."""
    from optkit import registry
    from optkit.engines.base import ModelInfo
    from optkit.meters.roofline import kv_bytes_per_token

    per = {n: float(ELEM[dtype]) for n in linears}  # bytes per weight of each linear
    act, notes = ELEM[dtype], []
    quantized: set[str] = set()
    if variant.engine == "llamacpp" and file_bytes_per_weight:
        per = dict.fromkeys(linears, file_bytes_per_weight)
        quantized = set(linears)
        notes.append(f"runs the GGUF file as it is: {file_bytes_per_weight:.2f} bytes per weight on average "
                     "(file size / weights)")
    info = ModelInfo(linears=linears, dtype=dtype, device="cpu")
    for step in variant.steps:
        method = registry.get(step.method)
        params = method.Params.model_validate(step.params)
        act = ELEM.get(method.output_dtype(info, params), act)
        info.dtype = method.output_dtype(info, params)
        per.update({n: float(act) for n in per if n not in quantized})  # float weights follow the dtype
        try:
            sample = method.bytes_per_weight(params, next(iter(linears.values()))[1], act) if linears else None
        except NotImplementedError:
            notes.append(f"{step.method}: bytes per weight unknown to the forecast, assumed unchanged")
            continue
        if sample is None:
            continue  # the step keeps the bytes (pruning: dense zeros; exports)
        for n in method.forecast_targets(list(linears), params):
            per[n] = method.bytes_per_weight(params, linears[n][1], act)
            quantized.add(n)
        if step.auto_exclude is not None:
            notes.append("auto_exclude may keep some layers in higher precision: less speed-up")
    count = {n: o * i for n, (o, i) in linears.items()}
    weights = sum(count[n] * per[n] for n in linears)
    kv = kv_bytes_per_token(config, context, act)
    total = weights + config.hidden_size * act + kv  # + one embedding row
    mean = weights / max(1, sum(count.values()))
    return Expected(variant.name, mean, total, bandwidth_gb_s * 1e9 / total, kv_bytes=kv, notes=notes)


def compute_bound_from(params: int, weight_bytes: float, kv: float, ridge: float) -> int | None:
    """Smallest batch b with 2 * params * b FLOPs per (weights + b x KV) bytes above the ridge point."""
    if 2 * params <= ridge * kv:
        return None
    return int(ridge * weight_bytes // (2 * params - ridge * kv)) + 1


def forecast(plan, remeasure: bool = False) -> Forecast:
    from transformers import AutoConfig

    from optkit.engines.llamacpp.convert import hf_folder
    from optkit.meters.roofline import device_speed
    from optkit.preflight import model_info

    recipe = plan.recipe
    bench = recipe.bench
    context = (bench.prompt_len + bench.gen_len // 2) if bench else 128 + 32
    bandwidth, gflops, measured = device_speed(plan.device, remeasure)
    info = model_info(plan.checkpoint, recipe.model.dtype, plan.device, plan.trust.trust_remote_code,
                      plan.trust.allow_pickle)
    if not info.linears:
        return Forecast(bandwidth, gflops, measured, context, recipe.baseline, [],
                        note="the checkpoint is an optkit artifact: its layer shapes are not known from a config, "
                             "so there is no forecast; benchmark it with optkit bench")
    config = AutoConfig.from_pretrained(hf_folder(plan.checkpoint).location,
                                        trust_remote_code=plan.trust.trust_remote_code,
                                        revision=plan.checkpoint.pinned() if plan.checkpoint.kind == "hub" else None)
    params = sum(o * i for o, i in info.linears.values())
    per_weight = None
    if plan.checkpoint.kind == "gguf":
        # the file also stores the token embeddings, once more unless the lm_head is tied to them
        tied = getattr(config, "tie_word_embeddings", False) and "lm_head" in info.linears
        weights = params + (0 if tied else config.vocab_size * config.hidden_size)
        per_weight = Path(plan.checkpoint.location).stat().st_size / weights
    rows = [expected(v, info.linears, recipe.model.dtype, config, context, bandwidth, per_weight)
            for v in recipe.variants]
    base = next((r for r in rows if r.name == recipe.baseline), rows[0])
    ridge = gflops / bandwidth
    for r in rows:
        r.speedup = base.bytes_per_token / r.bytes_per_token
        r.compute_bound_from = compute_bound_from(params, r.bytes_per_weight * params, r.kv_bytes, ridge)
    return Forecast(bandwidth, gflops, measured, context, base.name, rows, params=params)


def render(f: Forecast) -> str:
    out = [f"device: memory bandwidth {f.bandwidth_gb_s:.1f} GB/s (copy), matmul {f.matmul_gflop_s:.0f} GFLOP/s "
           f"float32 ({f.measured}; optkit plan --remeasure to measure again)"]
    if f.note:
        return "\n".join(out + [f.note])
    out.append(f"expected batch-1 decode, from bytes moved per token (KV cache at {f.context} tokens of context):")
    head = ["variant", "B/weight", "MB/token", "bound tok/s", "speed-up", "compute-bound from batch"]
    body = [[r.name + (" (baseline)" if r.name == f.baseline else ""), f"{r.bytes_per_weight:.2f}",
             f"{r.bytes_per_token / 1e6:.1f}", f"{r.bound_tokens_per_s:.0f}", f"{r.speedup:.2f}x",
             str(r.compute_bound_from or "-")] for r in f.variants]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    for cells in [head, ["-" * w for w in widths], *body]:
        out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    out += [f"  {r.name}: {n}" for r in f.variants for n in r.notes]
    out += ["", "These are upper bounds: they count only bytes moved, so real speed-ups are smaller wherever "
            "kernels, dequantization or per-token overhead cost time (optkit bench measures the real ones).",
            "Weight-only int8/int4 shrink bytes, not FLOPs: at batch sizes from the last column on, decode is "
            "compute-bound and they will not make it faster. Pruning moves the same dense bytes on CPU: no "
            "speed-up expected."]
    return "\n".join(out)
