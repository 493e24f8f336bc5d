"""The traffic a recommendation ranks for (recipe `workload:`): weighted (prompt, output) points, a concurrency and an
objective, what one pass over it measures, and how a pass's totals become one figure.

A pass sends one request per point (batch = concurrency, `prompt` random tokens, `output` greedy new tokens) and
keeps, weighted by the point's share: generated tokens, decode seconds, prefill ms and end-to-end ms. From them:

    decode      generated tokens / decode seconds (tokens/s once the prompt is in; today's ranking)
    throughput  generated tokens / end-to-end seconds (whole requests, prefill included)
    latency     mean end-to-end ms per request (what a user waits for the whole answer)
    ttft        mean time to first token, ms

Unset, the workload is one point with bench's prompt_len and gen_len, concurrency 1, objective decode: exactly the
batch-1 decode figure optkit ranked by before workloads existed (the demo's shape), and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from optkit.recipe import BenchSpec, WorkloadPoint, WorkloadSpec

UNIT = {"decode": "tokens/s", "throughput": "tokens/s", "latency": "ms", "ttft": "ms"}
PHRASE = {"decode": "decode speed", "throughput": "throughput", "latency": "faster end to end",
          "ttft": "faster to the first token"}  # after "2.00x " in the recommendation
WHAT = {"decode": "decode tokens/s", "throughput": "generated tokens/s per whole request",
        "latency": "end-to-end latency per request", "ttft": "time to first token"}


def resolve(workload: WorkloadSpec | None, bench: BenchSpec | None) -> WorkloadSpec:
    """The workload to rank for: the recipe's, else the default from bench's prompt and output lengths."""
    if workload is not None:
        return workload
    bench = bench or BenchSpec()
    return WorkloadSpec(requests=[WorkloadPoint(prompt=bench.prompt_len, output=bench.gen_len)])


def higher_is_better(objective: str) -> bool:
    return UNIT[objective] != "ms"


def describe(w: WorkloadSpec, default: bool = False) -> str:
    """One line: what is ranked, for which traffic; the default says that it is one."""
    total = sum(p.weight for p in w.requests)
    mix = ", ".join(f"{p.prompt}/{p.output}" + (f" ({p.weight / total:.0%})" if len(w.requests) > 1 else "")
                    for p in w.requests)
    who = "1 request at a time" if w.concurrency == 1 else f"{w.concurrency} requests together"
    text = f"{WHAT[w.objective]} for prompt/output tokens {mix}, {who}"
    return text + (" (the default workload: set `workload:` in the recipe for your traffic)" if default else "")


@dataclass
class Totals:
    """One or more passes over a workload, each point's figures weighted by its share."""

    weight: float = 0.0
    tokens: float = 0.0  # generated, all sequences of the batch
    decode_s: float = 0.0
    prefill_ms: float = 0.0
    e2e_ms: float = 0.0

    def add(self, point: WorkloadPoint, batch: int, decode_s: float, prefill_ms: float, e2e_ms: float) -> None:
        w = point.weight
        self.weight += w
        self.tokens += w * batch * point.output
        self.decode_s += w * decode_s
        self.prefill_ms += w * prefill_ms
        self.e2e_ms += w * e2e_ms

    def value(self, objective: str) -> float:
        if objective == "decode":
            return self.tokens / self.decode_s
        if objective == "throughput":
            return self.tokens / (self.e2e_ms / 1000)
        return (self.e2e_ms if objective == "latency" else self.prefill_ms) / self.weight


def speedup(mine: float, theirs: float, objective: str) -> float:
    """How many times faster `mine` is than `theirs` on the objective (> 1: faster), whichever way its unit runs."""
    return mine / theirs if higher_is_better(objective) else theirs / mine


def parse_points(text: str) -> list[WorkloadPoint]:
    """'2000/100' or '2000/100:3,200/200:1' (prompt/output[:weight], comma-separated) -> points; ValueError naming
    the bad part."""
    points = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lengths, _, weight = part.partition(":")
        prompt, sep, output = lengths.partition("/")
        try:
            points.append(WorkloadPoint(prompt=int(prompt), output=int(output), weight=float(weight or 1)))
        except (ValueError, TypeError):
            raise ValueError(f"bad workload point {part!r}; write PROMPT/OUTPUT[:WEIGHT], e.g. 2000/100 or "
                             "200/200:3") from None
        if not sep:
            raise ValueError(f"bad workload point {part!r}; write PROMPT/OUTPUT[:WEIGHT], e.g. 2000/100")
    if not points:
        raise ValueError("empty workload; write PROMPT/OUTPUT[:WEIGHT] points, e.g. 2000/100,200/200")
    return points


def is_default_shape(w: WorkloadSpec, bench: BenchSpec) -> bool:
    """Whether the workload is what the benchmark's batch-1 decode already measures (no extra passes needed)."""
    return (w.objective == "decode" and w.concurrency == 1 and len(w.requests) == 1
            and (w.requests[0].prompt, w.requests[0].output) == (bench.prompt_len, bench.gen_len))


def measure(lm, w: WorkloadSpec, spec: BenchSpec, energy, limit: float):
    """The workload's figures for one model: passes until `repeats` clean ones and `min_seconds` of decode (at
    most max_repeats); the objective per pass, and per point its time to first token, decode and end-to-end."""
    from optkit.meters.decode import Samples, one_rep, workload_prompts
    from optkit.meters.latency import enough, marked, stats
    from optkit.results import WorkloadFigures, WorkloadPointFigures

    ids = workload_prompts(lm, lm, w)
    per_point = [Samples(limit) for _ in w.requests]
    values: list[float] = []
    shares: list[float | None] = []
    for warm in range(spec.warmup + spec.max_repeats):
        totals = Totals()
        for point, prompt, into in zip(w.requests, ids, per_point):
            s = Samples(limit) if warm < spec.warmup else into
            before = s.decode_s
            one_rep(lm, prompt, point.output, energy, s)
            totals.add(point, prompt.shape[0], s.decode_s - before, s.prefill_ms[-1], s.e2e_ms[-1])
        if warm < spec.warmup:
            continue
        values.append(totals.value(w.objective))
        shares.append(max((x.e2e_share[-1] or 0.0) for x in per_point))
        decoded = sum(x.decode_s for x in per_point)
        if enough(marked(values, shares, UNIT[w.objective]), spec.repeats, limit) and decoded >= spec.min_seconds:
            break
    points = [WorkloadPointFigures(
        prompt=p.prompt, output=p.output, weight=p.weight,
        ttft_ms=stats(s.prefill_ms, "ms", s.prefill_share, spec.repeats, limit),
        decode_tokens_per_s=stats(s.tps, "tokens/s", s.decode_share, spec.repeats, limit),
        e2e_ms=stats(s.e2e_ms, "ms", s.e2e_share, spec.repeats, limit)) for p, s in zip(w.requests, per_point)]
    return WorkloadFigures(objective=w.objective, unit=UNIT[w.objective], concurrency=w.concurrency,
                           value=stats(values, UNIT[w.objective], shares, spec.repeats, limit), points=points)


def from_bench(point, spec: BenchSpec):
    """The default workload's figures from the benchmark's own batch-1 measurement (the same requests)."""
    from optkit.results import WorkloadFigures, WorkloadPointFigures

    return WorkloadFigures(objective="decode", unit=UNIT["decode"], concurrency=1, value=point.decode_tokens_per_s,
                           points=[WorkloadPointFigures(prompt=spec.prompt_len, output=spec.gen_len, weight=1.0,
                                                        ttft_ms=point.prefill_ms,
                                                        decode_tokens_per_s=point.decode_tokens_per_s)])
