"""Roofline: what decode speed the device's memory bandwidth allows, and a plain verdict on why a variant is
or is not faster. Bandwidth and matmul throughput (per compute dtype) are measured on the device itself, once per
machine: device_speed keeps them in $OPTKIT_CACHE/device-speed.json. Measured in every benchmark's process, they
cost each bfloat16 variant 14 s on a CPU without bf16 matmul units (six 1024^3 matmuls of 2.3 s), longer than the
tiny test models' whole benchmark.

At batch b a decode step reads every weight once and the KV cache of b sequences: bytes per step =
weight bytes + b x KV bytes; it does ~2 x params x b FLOPs. Below the ridge point (peak FLOP/s over
bandwidth) a step is memory-bound and smaller weights pay off; above it, weight-only quantization cannot help.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from functools import cache

from optkit.results import Roofline

MEMORY_BOUND = 0.5  # at least this share of the bandwidth bound: decode is limited by bytes moved


def _timed(fn, sync, reps: int = 5, budget_s: float = 1.0) -> float:
    """Median of up to `reps` timed calls after a warm-up; fewer once they have taken budget_s (a slow dtype's
    matmul)."""
    fn()
    sync()
    times: list[float] = []
    while len(times) < reps and sum(times) < budget_s:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@cache
def device_peaks(device: str, dtype: str) -> tuple[float, float]:
    """-> (copy bandwidth in GB/s counting read + write, matmul GFLOP/s in dtype)."""
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    nbytes = 1 << 30 if device.startswith("cuda") else 1 << 29  # well past any cache (this CPU's L3: 300 MB)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = _timed(lambda: dst.copy_(src), sync)
    bandwidth = 2 * nbytes / seconds / 1e9
    size = 4096 if device.startswith("cuda") else 1024
    a = torch.randn(size, size, device=device).to(getattr(torch, dtype))
    b = torch.randn(size, size, device=device).to(getattr(torch, dtype))
    seconds = _timed(lambda: a @ b, sync)
    return bandwidth, 2 * size**3 / seconds / 1e9


def _cache_key(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return f"{device}|{platform.node()}|{cpu}|threads={torch.get_num_threads()}"


def _entry(hit) -> tuple[float, float, str] | None:
    """A device-speed table entry as (bandwidth, GFLOP/s, when), or None when it is not one (a damaged or
    hand-edited cache is measured again, never trusted into a traceback or a zero division)."""
    if not isinstance(hit, dict):
        return None
    bandwidth, gflops, when = hit.get("bandwidth_gb_s"), hit.get("matmul_gflop_s"), hit.get("when")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
             for v in (bandwidth, gflops))
    return (float(bandwidth), float(gflops), when if isinstance(when, str) else "?") if ok else None


def device_speed(device: str, remeasure: bool = False, dtype: str = "float32") -> tuple[float, float, str]:
    """(bandwidth GB/s, matmul GFLOP/s in dtype, where from): measured once per machine and dtype and cached in
    $OPTKIT_CACHE/device-speed.json; a remeasurement keeps the higher of old and new, since contention only ever
    lowers a peak."""
    from optkit.files import atomic_write, cache_dir, read_memo

    path = cache_dir() / "device-speed.json"
    table = read_memo(path)
    key = _cache_key(device) + ("" if dtype == "float32" else f"|{dtype}")
    old = _entry(table.get(key))
    if old is not None and not remeasure:
        return old[0], old[1], f"cached {old[2]} in {path}"
    bandwidth, gflops = device_peaks(device, dtype)
    if old is not None:  # other processes can only make a peak read low: keep the best seen on this machine
        bandwidth, gflops = max(bandwidth, old[0]), max(gflops, old[1])
    table[key] = {"bandwidth_gb_s": bandwidth, "matmul_gflop_s": gflops, "when": time.strftime("%Y-%m-%d %H:%M")}
    try:
        atomic_write(path, json.dumps(table, indent=2))
    except OSError:
        pass  # a read-only cache costs one measurement per run, nothing more
    return bandwidth, gflops, "measured now"


def kv_bytes_per_token(config, context: int, element_bytes: int) -> int:
    layers = getattr(config, "num_hidden_layers", 0)
    heads = getattr(config, "num_key_value_heads", None) or getattr(config, "num_attention_heads", 0)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * layers * heads * head_dim * context * element_bytes


def analyze(device: str, dtype: str, params: int, weight_bytes: int, kv_bytes: int, tps: float | None,
            curve: dict[int, float]) -> Roofline:
    bandwidth, gflops, _ = device_speed(device, dtype=dtype)
    bound = bandwidth * 1e9 / (weight_bytes + kv_bytes)
    ridge = gflops / bandwidth
    achieved = tps / bound if tps else None
    verdicts = []
    if achieved is not None:
        if achieved >= MEMORY_BOUND:
            shrink = (weight_bytes + kv_bytes) / (params * 0.5625 + kv_bytes)  # 4-bit + group scales
            hint = (f"4-bit weights could be up to ~{shrink:.1f}x faster" if shrink > 1.2
                    else "its weights are already about as small as 4-bit")
            verdicts.append(f"memory-bound at batch 1 ({achieved:.0%} of the {bound:.0f} tokens/s bandwidth bound): "
                            f"fewer weight bytes mean faster decode; {hint}")
        else:
            verdicts.append(f"not limited by memory at batch 1 ({achieved:.0%} of the {bound:.0f} tokens/s bandwidth "
                            "bound): compute or per-token overhead dominates, so smaller weights alone will not "
                            "make decode much faster here")
    for batch, speed in sorted(curve.items()):
        if batch == 1:
            continue
        intensity = 2 * params * batch / (weight_bytes + batch * kv_bytes)
        side = ("compute-bound: weight-only quantization will not help" if intensity > ridge
                else "still memory-bound: smaller weights still help")
        verdicts.append(f"batch {batch}: {speed:.1f} tokens/s, {intensity:.0f} FLOP/byte vs ridge {ridge:.0f}: {side}")
    return Roofline(bandwidth_gb_s=bandwidth, matmul_gflop_s=gflops, matmul_dtype=dtype, params=params,
                    weight_bytes=weight_bytes, kv_bytes_per_token=kv_bytes, bound_tokens_per_s=bound,
                    achieved_fraction=achieved, ridge_flops_per_byte=ridge, verdicts=verdicts)
