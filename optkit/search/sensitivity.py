"""Per-tensor sensitivity for mixed GGUF types: each group (a tensor class over a block of layers, or the embeddings
and output) is quantized alone to the low type, every other tensor kept as it is, and the KL of the model's next-token
distribution from the source's is measured on calibration text (WikiText-2 validation, never the test split).

It runs as one worker job (worker.VariantJob.sensitivity): one process loads the source once, computes its reference
distributions and the importance matrix once, then writes, opens and scores one file per group, each in seconds.
A job per group would pay a process start-up and a model load per group.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable

from optkit.calibration import CalibrationSpec
from optkit.searchrecord import GroupSensitivity, Sensitivity
from optkit.searchspec import SensitivitySpec

BLOCK = re.compile(r"^blk\.(\d+)\.(.+)\.weight$")
FLOATS = ("F32", "F16", "BF16")
KEEP_FASTER = 1.05  # Q8_0 timed at least this much faster than the source: mixes keep their other groups in it
# rounds timing each kept type's move to the low type: those savings place groups of different source types in the
# greedy order, and with 3 rounds (sides' medians) three searches on one host put SmolLM2's Q8_0 embedding's saving
# at 0.84, 1.06 and 2.2 ms, 17th, 20th and 2nd in the order, so the mixes differed from run to run
SAVING_ROUNDS = 5


def groups(types: dict[str, str], blocks: int) -> dict[str, str]:
    """Group name -> regex: each quantized 2-D tensor class (attn_q, ffn_down, ...) over `blocks` contiguous blocks of
    layers, and each tensor outside the layers (token_embd, output) on its own. 1-D tensors (norms) stay as they are
    in llama.cpp anyway."""
    layers: dict[str, list[int]] = {}
    out: dict[str, str] = {}
    for name in types:
        m = BLOCK.match(name)
        if "norm" in name or not name.endswith(".weight"):
            continue
        if m:
            layers.setdefault(m.group(2), []).append(int(m.group(1)))
        else:
            out[name.removesuffix(".weight")] = f"^{re.escape(name)}$"
    count = max((max(v) for v in layers.values()), default=-1) + 1
    size = -(-count // max(1, min(blocks, count or 1)))
    for cls in sorted(layers):
        for lo in range(0, count, size):
            ids = [i for i in sorted(set(layers[cls])) if lo <= i < lo + size]
            if ids:
                out[f"{cls} {ids[0]}-{ids[-1]}"] = rf"^blk\.({'|'.join(map(str, ids))})\.{re.escape(cls)}\.weight$"
    return out


def members(pattern: str, names: Iterable[str]) -> list[str]:
    rx = re.compile(pattern)
    return [n for n in names if rx.search(n)]


def bytes_per_weight(kind: str) -> float:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[kind]]
    return size / block


def quantize_params(low: str, patterns: list[str], keep_type: str | None, requantize: bool,
                    imatrix: CalibrationSpec | None) -> dict:
    """gguf.quantize parameters moving the tensors the patterns match to `low` (a tensor-type override, which wins
    over llama.cpp's own rules: the tied embedding would otherwise stay at the output's Q6_K/Q8_0), every other
    tensor pinned to keep_type or its type in the source."""
    joined = "|".join(f"(?:{p})" for p in patterns)
    params = {"type": low, "include": [joined], "tensor_types": {joined: low}, "allow_requantize": requantize}
    if keep_type:
        params["keep_type"] = keep_type
    if imatrix is not None:
        params["imatrix"] = imatrix.model_dump()
    return params


def _kl(ref, logits) -> tuple[float, float]:
    """Mean and standard error over windows of KL(ref || model) per position; ref: log-probs per window."""
    import torch

    per = []
    for r, lg in zip(ref, logits):
        q = torch.log_softmax(lg.float(), -1)
        per.append(float((r.exp() * (r - q)).sum(-1).mean()))
    from optkit.stats import mean_se

    return mean_se(per)


def run_sensitivity_job(job, cand) -> None:
    """The worker's side (VariantJob.sensitivity): the source built as the variant's steps say (a GGUF file as it
    is, or gguf.export of a float model), then every group quantized alone and scored."""
    import torch

    from optkit import loading
    from optkit.calibration import calibration_batch
    from optkit.engines.llamacpp.methods import Quantize
    from optkit.engines.llamacpp.quant import compute_imatrix
    from optkit.engines.method import apply_steps
    from optkit.gguf_header import read
    from optkit.progress import note

    spec: SensitivitySpec = job.sensitivity
    started = time.perf_counter()
    lm = loading.load(job.checkpoint, job.model.dtype, job.device, job.trust.allow_pickle,
                      job.trust.trust_remote_code, job.engine)
    lm, cand.steps = apply_steps(lm, job.variant.steps)
    header = read(lm.path)
    types, sizes = header.tensor_types, header.sizes
    requantize = any(t not in FLOATS for t in types.values())
    windows = calibration_batch(lm, spec.calibration)
    with torch.no_grad():
        ref = [torch.log_softmax(lm.logits(w[None])[0][0].float(), -1) for w in windows]
    if spec.imatrix is not None:
        compute_imatrix(lm, spec.imatrix)  # once: each group's quantize finds it in the cache
    uniform = uniform_speedups(lm, spec, requantize, job.bench)
    if spec.keep_type is None and requantize and uniform.get("Q8_0", 0.0) > KEEP_FASTER:
        # Q8_0 holds any 4- to 6-bit block to within 1/254 of its range: keeping the other groups in it costs next
        # to nothing and buys its speed where it decodes faster than the source's own types (SmolLM2's Q4_1 on some
        # hosts)
        spec = spec.model_copy(update={"keep_type": "Q8_0"})
    out = []
    for i, (name, pattern) in enumerate(spec.groups.items(), 1):
        note(f"sensitivity: group {i}/{len(spec.groups)} ({name})")
        params = Quantize.Params.model_validate(quantize_params(spec.low, [pattern], spec.keep_type, requantize,
                                                                spec.imatrix))
        model, _ = Quantize().apply(lm, params)
        with torch.no_grad():
            kl, se = _kl(ref, [model.logits(w[None])[0][0] for w in windows])
        del model  # its temporary file goes with it
        names = members(pattern, types)
        saved = sum(sizes[n] * (bytes_per_weight(spec.keep_type or types[n]) - bytes_per_weight(spec.low))
                    for n in names)
        out.append(GroupSensitivity(group=name, pattern=pattern, tensors=len(names), weights=sum(sizes[n] for n in
                                    names), bytes_saved=int(saved), kl=max(0.0, kl), kl_se=se,
                                    kind="+".join(sorted({spec.keep_type or types[n] for n in names})) or None))
    source_ms, saved = type_savings(lm, spec, types, sizes, requantize, job.bench)
    for g in out:
        per = [saved.get(spec.keep_type or types[n]) for n in members(g.pattern, types)]
        if per and all(p is not None for p in per):
            g.ms_saved = sum(sizes[n] * p for n, p in zip(members(g.pattern, types), per))
    cand.sensitivity = Sensitivity(low=spec.low, source_types=dict(Counter(types.values())),
                                   tokens=int(windows.numel()), imatrix=spec.imatrix is not None, groups=out,
                                   source_ms=source_ms, type_ms_saved={k: v * _of_type(k, types, sizes, spec)[1]
                                                                       for k, v in saved.items()},
                                   uniform_speedup=uniform, keep_type=spec.keep_type,
                                   seconds=time.perf_counter() - started)


def _of_type(kind: str, types: dict, sizes: dict, spec: SensitivitySpec) -> tuple[list[str], int]:
    """The grouped tensors a mix would keep in `kind` (their type in the source, or keep_type), and their weights."""
    names = [n for p in spec.groups.values() for n in members(p, types) if (spec.keep_type or types[n]) == kind]
    return names, sum(sizes[n] for n in names)


def _workload(bench):
    from optkit.recipe import BenchSpec, WorkloadPoint, WorkloadSpec

    bench = bench or BenchSpec()
    return WorkloadSpec(requests=[WorkloadPoint(prompt=bench.prompt_len, output=bench.gen_len)]), bench


def _timed(lm, other, label: str, bench, rounds: int = 3) -> tuple[float, float]:
    """(lm's decode ms per token, other's decode speed-up over lm), timed head to head in this process, `rounds`
    interleaved rounds of >= 0.5 s. The speed-up is the median of the rounds' paired ratios, not a ratio of the two
    sides' medians: a round a neighbour slowed slows both halves and moves the ratio least."""
    from optkit.duel import head_to_head

    w, bench = _workload(bench)
    duel = head_to_head(lm, other, ("source", label), w, bench, min_round_s=0.5, rounds=rounds)
    return 1000 / duel.sides[0].decode_tokens_per_s, 1 / duel.decode_speedup.median


def uniform_speedups(lm, spec: SensitivitySpec, requantize: bool, bench) -> dict[str, float]:
    """Each of spec.uniform as a whole file, its decode timed head to head with the source: what this machine does
    with each type, which bytes per token do not tell. SmolLM2's shipped Q4_1 file against its requantized copies:
    Q8_0 1.24x with twice the bytes on one host (issue 26); IQ4_NL 1.46x, Q4_0 1.26x, Q8_0 1.03x, Q6_K 0.98x on an
    AVX2 AMD EPYC host."""
    from optkit.engines.llamacpp.methods import NEEDS_IMATRIX, Quantize
    from optkit.progress import note

    out = {}
    for kind in spec.uniform:
        if kind in NEEDS_IMATRIX and spec.imatrix is None:
            continue
        note(f"sensitivity: timing the whole file in {kind}, head to head with the source")
        other, _ = Quantize().apply(lm, Quantize.Params(type=kind, allow_requantize=requantize,
                                                        imatrix=spec.imatrix if kind in NEEDS_IMATRIX else None))
        out[kind] = _timed(lm, other, kind, bench)[1]
        del other
    return out


def type_savings(lm, spec: SensitivitySpec, types: dict, sizes: dict, requantize: bool,
                 bench) -> tuple[float | None, dict]:
    """(the source's decode ms per token, {type: ms saved per token per weight}): for each type the groups' tensors
    are kept in, every such tensor moved to the low type at once and timed head to head against the source on this
    machine. The low type's gain is mostly its kernel here (Q4_1 -> Q4_0 saves a tenth of the bytes, its AVX2
    kernel far more time), so this, not bytes, is what a mix buys with each group."""
    from optkit.engines.llamacpp.methods import Quantize
    from optkit.progress import note

    kinds = sorted({spec.keep_type or types[n] for p in spec.groups.values() for n in members(p, types)})
    per_weight, source_ms = {}, None
    if spec.keep_type:  # a float source: what a mix keeps is keep_type, so that is what the low type is timed against
        every = [f"^{re.escape(n)}$" for p in spec.groups.values() for n in members(p, types)]
        lm, _ = Quantize().apply(lm, Quantize.Params.model_validate(quantize_params(spec.keep_type, every, None,
                                                                                    requantize, None)))
        requantize = True
    for kind in [k for k in kinds if k != spec.low]:
        names, weights = _of_type(kind, types, sizes, spec)
        note(f"sensitivity: timing every {kind} tensor in {spec.low}, head to head with the source")
        params = Quantize.Params.model_validate(quantize_params(
            spec.low, [f"^{re.escape(n)}$" for n in names], None, requantize, spec.imatrix))
        other, _ = Quantize().apply(lm, params)
        src, faster = _timed(lm, other, kind, bench, SAVING_ROUNDS)
        per_weight[kind], source_ms = src * (1 - 1 / faster) / max(1, weights), source_ms or src
        del other
    return source_ms, per_weight
