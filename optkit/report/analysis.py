"""Derived views of a report, numbers only: per-variant deltas to the baseline (Row), the Pareto frontier, the
accuracy budget, drift, per-task paired deltas. The sentences people read about them (the recommendation,
labels, legends) are in wording.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

from optkit.report import hardware
from optkit.results import Report, VariantResult
from optkit.stats import Stats, mcnemar_exact, pair_by_id, paired_mean_ci, paired_ratio_ci

__all__ = ["mcnemar_exact"]  # also here: the report's view of the flips test

DEFAULT_PPL_BUDGET = 0.05


@dataclass
class Row:
    name: str
    status: str
    ppl: float | None = None
    ppl_se: float | None = None
    tps: float | None = None
    prefill_ms: float | None = None
    size_mb: float | None = None
    peak_mb: float | None = None
    tps_noisy: bool = False
    prefill_noisy: bool = False
    block_nll: list[float] | None = None
    tokens: str | None = None  # which token ids the perplexity was scored on (a hash); None in older reports
    tps_p10: float | None = None
    tps_p90: float | None = None
    ppl_delta: float | None = None  # relative to the reference (the baseline unless told otherwise)
    ppl_delta_ci: tuple[float, float] | None = None  # 95% paired CI of ppl_delta
    ppl_note: str | None = None  # why there is no ppl_delta (scored on other token ids than the reference)
    tps_reason: str | None = None
    paired: Stats | None = None  # decode speed-up vs the run's baseline, alternating rounds in one process
    speedup: float | None = None
    speedup_range: tuple[float, float] | None = None  # pessimistic, optimistic (p10/p90)
    speedup_how: str = ""  # "paired over N rounds" or "from separate runs"
    speedup_noisy: str | None = None  # why the speed-up is uncertain, or None when it held up
    size_ratio: float | None = None  # baseline size / this size
    error: str | None = None
    hardware: str | None = None  # the class it was benchmarked on: speed-ups compare within one
    engine: str | None = None  # what it was measured in (registry name); None in reports before engines
    file: str | None = None  # the file to deploy, where the model is one file (a GGUF)
    speed_caveat: str | None = None  # the timing is not the format's serving speed (formats.Format.speed_note)
    tokenizer_caveat: str | None = None  # the engine's own tokenizer disagrees with the one it was scored with
    objective: str = "decode"  # what speed-ups are of: the workload's objective (optkit/workload.py)
    obj: float | None = None  # the objective's median in the variant's own benchmark (tokens/s or ms)
    obj_p10: float | None = None
    obj_p90: float | None = None
    obj_noisy: bool = False
    obj_reason: str | None = None

    @property
    def finite(self) -> bool:
        """Every figure it ranks by is a number: a NaN or infinite one (finite.py) is shown, never ranked."""
        return all(v is None or math.isfinite(v) for v in (self.ppl, self.tps, self.speedup, self.prefill_ms,
                                                            self.size_mb, self.peak_mb, self.ppl_delta))

    @property
    def noisy(self) -> bool:
        """Decode or prefill timing did not hold up."""
        return self.tps_noisy or self.prefill_noisy


def row(c: VariantResult) -> Row:
    acc = next((a for a in c.accuracy if a.metric == "token_perplexity"), None)
    b = c.bench
    fig = b.workload.value if b and b.workload else (b.decode_tokens_per_s if b else None)
    paired = (b.paired.objective or b.paired.decode_speedup) if b and b.paired else None
    return Row(
        name=c.name, status=c.status, error=c.error,
        ppl=acc.value if acc else None, ppl_se=acc.stderr if acc else None,
        block_nll=acc.details.get("block_nll") if acc else None, tokens=acc.details.get("tokens") if acc else None,
        tps=b.decode_tokens_per_s.median if b else None,
        tps_p10=b.decode_tokens_per_s.p10 if b else None, tps_p90=b.decode_tokens_per_s.p90 if b else None,
        prefill_ms=b.prefill_ms.median if b else None,
        size_mb=b.size_mb if b else None, peak_mb=b.peak_memory_mb if b else None,
        tps_noisy=bool(b and b.decode_tokens_per_s.noisy), prefill_noisy=bool(b and b.prefill_ms.noisy),
        tps_reason=b.decode_tokens_per_s.noisy_reason if b else None,
        paired=paired, engine=c.engine, file=c.file,
        hardware=hardware.of(c), speed_caveat=speed_caveat(c.format, c.engine), tokenizer_caveat=tokenizer_caveat(c),
        objective=b.workload.objective if b and b.workload else "decode",
        obj=fig.median if fig else None, obj_p10=fig.p10 if fig else None, obj_p90=fig.p90 if fig else None,
        obj_noisy=bool(fig and fig.noisy), obj_reason=fig.noisy_reason if fig else None,
    )


def tokenizer_caveat(c: VariantResult) -> str | None:
    """Where a tokenizer check that let the variant run disagrees (OpenVINO: openvino-tokenizers' conversion; optkit
    then scores and times it with the model's own tokenizer): what to serve it with, or None."""
    bad = next((t for t in c.tokenizer_checks if t.result == "disagrees"), None)
    if bad is None:
        return None
    return (f"serve it with the tokenizer it was scored and timed with ({bad.scored_with}): {bad.reference} "
            f"disagrees with it on {bad.mismatches + bad.round_trip_failures} of {bad.samples} samples")


def speed_caveat(fmt: str | None, engine: str | None = None) -> str | None:
    """Why a variant's timing is not its format's serving speed, or None when it is. The note speaks of the
    engine the format names (compressed-tensors: PyTorch dequantizing): measured in another engine (vLLM,
    which serves it), it does not apply."""
    if not fmt:
        return None
    from optkit import formats

    f = formats.get(fmt)
    return f.speed_note or None if engine in (None, f.engine) else None


def compare(ref: Row, r: Row, paired: bool = False) -> Row:
    """Fill r's deltas relative to ref. With paired (ref is the run's baseline), the speed-up measured in
    alternating rounds in r's process is used where it exists: drift of the machine between variants cancels
    there. Otherwise the ratio of two separate runs, uncertain when either was noisy."""
    if ref.ppl and r.ppl and not same_tokens(ref, r):
        r.ppl_note = f"not compared with {ref.name}: scored on other token ids (another tokenizer)"
    elif ref.ppl and r.ppl:
        r.ppl_delta = r.ppl / ref.ppl - 1
        r.ppl_delta_ci = paired_ratio_ci(ref.block_nll, r.block_nll)
    if paired and r.paired is not None and r is not ref:
        st = r.paired
        r.speedup, r.speedup_range, r.speedup_how = st.median, (st.p10, st.p90), f"paired over {st.n} rounds"
        r.speedup_noisy = st.noisy_reason if st.noisy else None
    else:
        separate(ref, r)
    if ref.size_mb and r.size_mb:
        r.size_ratio = ref.size_mb / r.size_mb
    return r


def same_tokens(a: Row, b: Row) -> bool:
    """Whether two perplexities were scored on the same token ids (taken as so for reports that do not say)."""
    return a.tokens is None or b.tokens is None or a.tokens == b.tokens


def separate(ref: Row | None, r: Row) -> Row:
    """r's speed-up over ref on the workload's objective from their separate benchmarks; uncertain when either was
    noisy, None without both timings."""
    from optkit.workload import speedup

    r.speedup = r.speedup_range = r.speedup_noisy = None
    r.speedup_how = ""
    if ref is not None and ref.obj and r.obj:
        r.speedup, r.speedup_how = speedup(r.obj, ref.obj, r.objective), "from separate runs"
        if ref.obj_p10 and ref.obj_p90 and r.obj_p10 and r.obj_p90:
            ends = (speedup(r.obj_p10, ref.obj_p90, r.objective), speedup(r.obj_p90, ref.obj_p10, r.objective))
            r.speedup_range = (min(ends), max(ends))
        why = [f"{n} {r.objective} timing noisy: {x.obj_reason or 'spread'}" for n, x in (("its", r),
               ("the baseline's", ref)) if x.obj_noisy and not (x is ref and r is ref)]
        r.speedup_noisy = "; ".join(why) or None
    return r


def rows(report: Report) -> list[Row]:
    """Accuracy deltas against the baseline; speed-ups against the baseline benchmarked on the same hardware
    class (report/hardware.py), so a variant on a faster node does not look like a faster variant."""
    out = [row(c) for c in report.variants]
    base = next((r for r in out if r.name == report.baseline), None)
    if base is None:
        return out
    out = [compare(base, r, paired=True) for r in out]
    if hardware.several(report):  # a paired speed-up is timed in one process, so on one node already
        refs = {k: row(c) for k, c in hardware.baselines(report).items()}
        for r in out:
            if r is not base and not r.speedup_how.startswith("paired"):
                separate(refs.get(r.hardware), r)
    moved = drift(report)
    if moved:
        for r in out:
            if r is not base and r.speedup_how == "from separate runs" and r.hardware == base.hardware:
                r.speedup_noisy = "; ".join(filter(None, [r.speedup_noisy, moved]))
    return out


def drift(report: Report) -> str | None:
    """Why speed-ups from separate runs are uncertain, when the baseline benchmarked again after the last variant
    (report.baseline_again) moved further than the spread (p10-p90) of both of its benchmarks; else None."""
    base = next((c for c in report.variants if c.name == report.baseline), None)
    again = report.baseline_again
    if base is None or base.bench is None or again is None or again.bench is None:
        return None
    first, second = base.bench.decode_tokens_per_s, again.bench.decode_tokens_per_s
    if not first.median or not second.median:
        return None
    change = second.median / first.median - 1
    spread = max((s.p90 - s.p10) / s.median for s in (first, second))
    if abs(change) <= spread:
        return None
    return (f"the baseline's decode speed moved {change:+.0%} between its benchmark and another after the last "
            f"variant (its spread: {spread:.0%}): the machine drifted between runs")


def frontier(rs: list[Row]) -> list[str]:
    """Names of ok variants on the perplexity / decode-speed frontier: from the fastest down, a variant earns its
    place only by a lower perplexity than every faster variant on it, told apart by the paired 95% CI where both
    were scored on the same tokens (by the figures alone where not). A lower perplexity within the noise earns
    none: the demo's Q8_0 file, 0.002% below the Q4_1 file and 25% slower, was starred by the figures alone."""
    pts = [r for r in rs if r.status == "ok" and r.ppl is not None and r.tps is not None and not r.speed_caveat
           and r.finite]
    fast = {r.name: r.speedup if r.speedup is not None else r.tps for r in pts}  # paired where measured

    def lower(r: Row, k: Row) -> bool:
        if not same_tokens(r, k):  # perplexities of other token ids say nothing about each other
            return True
        ci = paired_ratio_ci(k.block_nll, r.block_nll)  # r's perplexity relative to k's
        return r.ppl < k.ppl and (ci is None or ci[1] < 0)

    keep: list[Row] = []
    for r in sorted(pts, key=lambda r: (-fast[r.name], r.ppl)):
        if all(lower(r, k) for k in keep):
            keep.append(r)
    return [r.name for r in pts if r in keep]


def budget(report: Report) -> float:
    gates = report.recipe.get("gates") or {}
    value = gates.get("max_ppl_increase")
    return DEFAULT_PPL_BUDGET if value is None else float(value)


def engines(rs: list[Row]) -> set[str]:
    return {r.engine for r in rs if r.engine}


@dataclass
class TaskDelta:
    """One variant's per-sample comparison with the baseline on one task metric (same documents)."""

    variant: str
    task: str
    metric: str
    value: float
    base_value: float
    n: int
    delta: float | None = None
    ci: tuple[float, float] | None = None  # 95% paired CI of delta
    right_to_wrong: int | None = None  # binary metrics only
    wrong_to_right: int | None = None
    mcnemar_p: float | None = None


def task_delta(variant: str, new, base) -> TaskDelta | None:
    """Flips and paired CI from EvalResult.details (samples, doc_ids), paired by document id; None when the
    samples do not pair up (other documents, or no per-sample results)."""
    s_new, s_base = new.details.get("samples"), base.details.get("samples")
    if not isinstance(s_new, list) or not isinstance(s_base, list):
        return None
    paired = pair_by_id(s_base, base.details.get("doc_ids"), s_new, new.details.get("doc_ids"))
    if paired is None:
        return None
    s_base, s_new = paired
    mean, lo, hi = paired_mean_ci(s_base, s_new)
    out = TaskDelta(variant, new.task, new.metric, new.value, base.value, len(s_new), mean, (lo, hi))
    if set(s_new) | set(s_base) <= {0, 1}:
        out.right_to_wrong = sum(1 for a, b in zip(s_base, s_new) if a == 1 and b == 0)
        out.wrong_to_right = sum(1 for a, b in zip(s_base, s_new) if a == 0 and b == 1)
        out.mcnemar_p = mcnemar_exact(out.right_to_wrong, out.wrong_to_right)
    return out


def task_deltas(report: Report) -> list[TaskDelta]:
    """Every non-baseline variant's per-sample comparison on every task metric the baseline also has."""
    base = next((c for c in report.variants if c.name == report.baseline and c.status == "ok"), None)
    out = []
    for c in report.variants:
        if base is None or c is base or c.status != "ok":
            continue
        for res in c.accuracy:
            ref = base.metric(res.task, res.metric)
            td = task_delta(c.name, res, ref) if ref is not None else None
            if td is not None:
                out.append(td)
    return out


def fidelity(c: VariantResult) -> dict[str, float]:
    """metric -> value of the variant's fidelity to the baseline (empty when not measured)."""
    return {r.metric: r.value for r in c.accuracy if r.task == "fidelity"}
