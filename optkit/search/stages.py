"""The search's stages past the plan: the sensitivity job and the mixes it suggests, the forecast, and what each run
stage's report says about who leaves (successive elimination: over budget, too slow to matter, dominated, out of
time), all recorded on the candidates as it happens."""

from __future__ import annotations

import time
from pathlib import Path

from optkit.search import candidates as cands
from optkit.searchspec import STAGES

SHARE = {"screen": 0.4, "perplexity": 0.5, "benchmark": 1.0}  # of the time left a stage may use (the rest: later)
SLOWER = 0.9  # timed below this share of the source's decode speed (3 short rounds): out at the forecast


def source_tensors(s) -> tuple[dict, dict, dict]:
    """(type, weights, row width) per tensor of the source as llama.cpp will quantize it: the GGUF file's header;
    for a float checkpoint, its f32 export as the sensitivity job records it (empty until then)."""
    if s.ckpt.kind == "gguf":
        from optkit.engines.llamacpp.engine import gguf_file
        from optkit.gguf_header import read

        h = read(gguf_file(s.ckpt))
        return h.tensor_types, h.sizes, h.row_widths
    return {}, {}, {}


def add_mixes(s, types: dict) -> None:
    """The sensitivity job for each low type (resumed from out/sensitivity-<low>.json), then the mixes it suggests.
    The first job that runs times the uniform types and decides the type mixes keep; the others reuse both."""
    from optkit import reuse
    from optkit.live import Board
    from optkit.pipeline import plan as make_plan
    from optkit.search.mix import mixes
    from optkit.search.sensitivity import groups
    from optkit.searchspec import SensitivitySpec

    spec = s.spec.mixes
    requantize = any(t not in cands.FLOATS for t in types.values())
    keep, timed = spec.high or (None if requantize else "Q8_0"), {}
    for low in spec.low:
        out = s.out / f"sensitivity-{low.lower()}.json"
        variant = cands.source_variant(s.ckpt).model_copy(update={"name": f"sensitivity-{low.lower()}",
                                                                   "steps": cands.prefix(s.ckpt)})
        recipe = s.recipe.model_copy(update={"variants": [variant], "baseline": variant.name, "search": None,
                                             "bench": None, "gates": None})
        job = make_plan(recipe, "search sensitivity", s.base_dir, device=s.device, trust=s.trust).jobs[0]
        job = reuse.stamp(job.model_copy(update={"eval": None, "sensitivity": SensitivitySpec(
            low=low, groups=groups(types, spec.blocks), calibration=s.spec.calibration,
            keep_type=keep, imatrix=s.spec.imatrix if spec.imatrix else None,
            uniform=[] if timed else _uniform_types(s))}))
        done = reuse.previous(out)  # kept when its inputs (the sensitivity spec among them) are the same: reuse.py
        if reuse.why_not(done, job) is not None or done.sensitivity is None:
            started = time.perf_counter()
            board = Board({variant.name: variant.name}, s.say)
            placed = job.placed(out, s.out / "logs" / f"{variant.name}.log")
            ran = [cand for _, cand in s.executor.run_all([placed], board)]
            done = ran[0] if ran else None
            board.close()
            s.in_runs += time.perf_counter() - started
        if done is None or done.status != "ok" or done.sensitivity is None:
            s.say(f"search: the sensitivity job for {low} failed ({done.error if done else 'not run'}); no {low} "
                  "mixes")
            continue
        s.sensitivity = sens = done.sensitivity
        keep, timed = sens.keep_type, timed or sens.uniform_speedup
        for mix in mixes(sens.groups, low, spec.points):
            variant = cands.mixed(s.ckpt, s.spec, mix, low, types, keep)
            s.add(variant, "mix", predicted_kl=mix.predicted_kl, low_share=mix.low_share,
                  timed_speedup=_mix_speedup(sens, mix, timed))
            s.moved[variant.name] = (low, frozenset(mix.groups))
    if s.sensitivity is not None:  # the report's table: the last job's groups, the first one's whole-file timings
        s.sensitivity = s.sensitivity.model_copy(update={"uniform_speedup": timed})
    for r in s.records.values():
        kind = r.steps[-1]["params"]["type"].upper() if r.kind == "uniform" and r.steps and \
            r.steps[-1]["method"] == "gguf.quantize" else None
        if kind in timed:
            r.timed_speedup = timed[kind]


def _uniform_types(s) -> list[str]:
    """The uniform candidates' llama.cpp types, each timed once by the sensitivity job (with or without an
    importance matrix, a type decodes alike)."""
    kinds = [v.steps[-1].params["type"].upper() for n, v in s.variants.items()
             if s.records[n].kind == "uniform" and v.steps and v.steps[-1].method == "gguf.quantize"]
    return sorted(set(kinds))


def _mix_speedup(sens, mix, timed: dict) -> float | None:
    """A mix's decode speed-up over the source as timed: the kept file's time (the source's, or its keep_type's
    whole-file time, from `timed`) less what its groups' moves saved, each timed against that file."""
    moved = [g for g in sens.groups if g.group in mix.groups]
    keep = timed.get(sens.keep_type, None) if sens.keep_type else 1.0
    if not sens.source_ms or keep is None or any(g.ms_saved is None for g in moved):
        return None
    left = sens.source_ms - sum(g.ms_saved for g in moved)
    return keep * sens.source_ms / left if left > 0 else None


def forecast(s, bench_report, types: dict, sizes: dict, widths: dict) -> None:
    """Bytes per decoded token and the bound they set (memory bandwidth / bytes); with the decode objective, a
    candidate timed slower than the source by the sensitivity job, or whose bound is below the source's measured
    decode speed, cannot beat it and leaves. GGUF candidates are priced tensor by tensor from the source's header,
    the other engines' by optkit plan's forecast."""
    from optkit.meters.roofline import device_speed

    src = next((c for c in bench_report.variants if c.name == cands.SOURCE), None)
    measured = src.bench.decode_tokens_per_s.median if src and src.status == "ok" and src.bench else None
    bandwidth = device_speed(s.device)[0] * 1e9
    objective = s.recipe.workload.objective if s.recipe.workload else "decode"
    others = {e.name: e for e in _plan_forecast(s)}
    if types:
        s.records[cands.SOURCE].bytes_per_token = cands.bytes_per_token(types, sizes)
        s.records[cands.SOURCE].bound_tokens_per_s = bandwidth / s.records[cands.SOURCE].bytes_per_token
    for name in s.alive():
        r, variant = s.records[name], s.variants[name]
        if any(st.method == "gguf.quantize" for st in variant.steps) and types:
            r.bytes_per_token = cands.bytes_per_token(cands.tensor_types(variant, types, widths), sizes)
        elif name in others:
            r.bytes_per_token = others[name].bytes_per_token
        if not r.bytes_per_token:
            continue
        r.bound_tokens_per_s = bandwidth / r.bytes_per_token
        if objective == "decode" and r.timed_speedup is not None and r.timed_speedup < SLOWER:
            s.leave(name, "forecast", f"decodes {r.timed_speedup:.2f}x the source's speed, timed head to head by the "
                    "sensitivity job")
        elif objective == "decode" and measured and r.bound_tokens_per_s < measured:
            s.leave(name, "forecast", f"reads {r.bytes_per_token / 1e6:.0f} MB per token: at most "
                    f"{r.bound_tokens_per_s:.0f} tokens/s at {bandwidth / 1e9:.1f} GB/s, and the source decodes "
                    f"{measured:.0f}")


def _plan_forecast(s) -> list:
    """optkit plan's forecast (optkit/forecast.py) of the candidates that are not GGUF files."""
    from optkit.forecast import forecast
    from optkit.pipeline import plan

    names = [n for n in s.alive() if not any(st.method.startswith("gguf.") for st in s.variants[n].steps)]
    if not names:
        return []
    recipe = s.recipe.model_copy(update={"variants": [cands.source_variant(s.ckpt), *(s.variants[n] for n in names)],
                                         "baseline": cands.SOURCE, "search": None, "gates": None})
    return forecast(plan(recipe, "search forecast", s.base_dir, device=s.device)).variants


def _score(s, report, name):
    from optkit.report.analysis import fidelity, rows

    r = next((x for x in rows(report) if x.name == name), None)
    c = next((x for x in report.variants if x.name == name), None)
    rec = s.records[name]
    if r is None or r.status != "ok":
        s.leave(name, rec.stage, f"failed: {(c.error if c else None) or 'no result'}")
        return None
    rec.ppl_delta, rec.ppl_ci = r.ppl_delta, r.ppl_delta_ci
    rec.ppl_tokens = next((a.n for a in c.accuracy if a.metric == "token_perplexity"), None)
    rec.kl = fidelity(c).get("kl_mean", rec.kl)
    step = next((st for st in reversed(c.steps) if st.method == "gguf.quantize"), None)
    if step is not None and step.details.get("size_bytes"):
        rec.size_mb = step.details["size_bytes"] / 2**20
    return r


def screen(s, report) -> None:
    """Out when the paired 95% CI of the perplexity change is all above the budget (few tokens: wide CIs, so only
    the clearly bad leave here)."""
    budget = s.spec.max_ppl_increase
    for name in [n for n in s.alive() if s.records[n].stage == "screen"]:
        r = _score(s, report, name)
        if r is not None and r.ppl_delta_ci and r.ppl_delta_ci[0] > budget:
            s.leave(name, "screen", f"perplexity {r.ppl_delta:+.1%} [{r.ppl_delta_ci[0]:+.1%}, "
                    f"{r.ppl_delta_ci[1]:+.1%}] on {s.records[name].ppl_tokens} tokens: all over the "
                    f"{budget:.0%} budget")


def perplexity(s, report) -> None:
    budget = s.spec.max_ppl_increase
    for name in [n for n in s.alive() if s.records[n].stage == "perplexity"]:
        r = _score(s, report, name)
        if r is not None and r.ppl_delta is not None and r.ppl_delta > budget:
            ci = f" [{r.ppl_delta_ci[0]:+.1%}, {r.ppl_delta_ci[1]:+.1%}]" if r.ppl_delta_ci else ""
            s.leave(name, "perplexity", f"perplexity {r.ppl_delta:+.1%}{ci} on {s.records[name].ppl_tokens} tokens: "
                    f"over the {budget:.0%} budget")


def priority(s, name: str) -> tuple:
    """Who goes first when time runs short: the likely fastest (timed fastest by the sensitivity job, else most
    weights in the low type, fewest bytes per token), then the most accurate."""
    r = s.records[name]
    return (-(r.timed_speedup or 0.0), -(r.low_share or 0.0), r.bytes_per_token or float("inf"), r.ppl_delta or 0.0)


def fit_time(s, stage: str, names: list[str]) -> list[str]:
    """The candidates the time left allows at this stage, by priority; the rest leave, said so. Costs per candidate
    come from the stages already run (the source's benchmark, the screen); a stage may use its SHARE of the time
    left, the rest is kept for the stages after it."""
    names = sorted(names, key=lambda n: priority(s, n))
    if stage == "benchmark":
        names, extra = names[:s.spec.max_benchmarked], names[s.spec.max_benchmarked:]
        for n in extra:
            s.leave(n, "perplexity", f"not benchmarked: {s.spec.max_benchmarked} candidates with a better forecast "
                    "were (search.max_benchmarked)")
    per = _cost(s, stage)
    room = s.left_s() * SHARE[stage]
    fits = max(1, int(room // per)) if per else len(names)
    for n in names[fits:]:
        s.leave(n, s.records[n].stage, f"time budget: {stage} needs ~{per:.0f} s per candidate; its share "
                f"({SHARE[stage]:.0%}) of the {max(0.0, s.left_s()):.0f} s left of {s.spec.time_budget_min:g} "
                f"minutes fits {fits}, taken in order of forecast speed")
    return names[:fits]


def _cost(s, stage: str) -> float | None:
    """Seconds per candidate of a stage, from what ran: the source's own benchmark run for the screen (a build and a
    short evaluation) and for the benchmark stage (paired rounds, a share of the head-to-heads), the screen for
    perplexity (a longer text). The factors are what the demo model's search measured (benchmarks/search_demo.py on
    2 cores: source run 59 s; per candidate screen 14.6 s, perplexity 35 s, benchmark 34 s)."""
    done = {t.stage: t for t in s.stages}
    first = next((t for t in s.stages if t.stage == "benchmark"), None)
    if stage == "perplexity" and "screen" in done and done["screen"].candidates:
        return 2.4 * done["screen"].wall_s / (done["screen"].candidates + 1)
    factor = {"screen": 0.25, "benchmark": 0.6}.get(stage)
    return factor * first.wall_s if factor and first else None


def reuse_source(s, done: str, into: str, plan) -> None:
    """Put the source's result from stage `done` into stage `into`'s run folder, where the run resumes it: its
    perplexity was scored with the same settings, so the stage need not load it again. Kept only when every part
    of its content key but the benchmark's is the same as the new job's (reuse.py); it is stamped with the new
    job's key, since the stage needs its perplexity only."""
    from optkit import reuse
    from optkit.results import write_model

    dst = s.out / "stages" / STAGES[into] / "variants" / f"{cands.SOURCE}.json"
    previous = reuse.previous(s.out / "stages" / STAGES[done] / "variants" / f"{cands.SOURCE}.json")
    if dst.is_file() or previous is None or previous.status != "ok" or previous.key is None:
        return
    job = reuse.stamp(next(j for j in plan.jobs if j.variant.name == cands.SOURCE))
    if job.key is None or any(previous.key_parts.get(k) != v for k, v in job.key_parts.items() if k != "bench"):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_model(dst, previous.model_copy(update={"key": job.key, "key_parts": job.key_parts}))


def benchmark(s, report) -> tuple[str | None, list[str]]:
    """The last stage's verdicts: dominated candidates and task drops leave; the recommendation's choice is the
    search's. Returns (chosen, notes)."""
    from optkit.report.analysis import frontier, rows
    from optkit.report.wording import recommendation

    rs = {r.name: r for r in rows(report)}
    front = set(frontier(list(rs.values())))
    rec = recommendation(report)  # the search ships what the report recommends
    source_ok = cands.SOURCE in rs and rs[cands.SOURCE].status == "ok"
    # no candidate got this far (the report then sees one model and recommends nothing): the search keeps the source
    chosen = rec.variant or (cands.SOURCE if source_ok else None)
    tied = {n: line.removeprefix(f"{n}: ") for n in rec.tied for line in rec.not_chosen if line.startswith(f"{n}: ")}
    for name in [n for n in s.alive() if s.records[n].stage == "benchmark"]:
        r = _score(s, report, name)
        if r is None:
            continue
        rec = s.records[name]
        rec.speedup = next(c.bench.paired.objective for c in report.variants if c.name == name and c.bench
                           and c.bench.paired) if r.paired else None
        rec.file = next((c.file for c in report.variants if c.name == name), None)
        drop = _task_drop(report, name)
        if s.spec.max_acc_drop is not None and drop is not None and drop > s.spec.max_acc_drop:
            s.leave(name, "benchmark", f"task accuracy drops {drop:.1%} (over {s.spec.max_acc_drop:.1%})")
        elif name == chosen:
            pass  # the frontier ranks on speed-ups against the source; the duels may have overturned that
        elif name in tied:
            s.leave(name, "benchmark", tied[name])
        elif name not in front and r.ppl_delta is not None and r.ppl_delta <= s.spec.max_ppl_increase:
            s.leave(name, "benchmark", "dominated: a candidate at least as fast is not measurably less accurate")
    src = next((c for c in report.variants if c.name == cands.SOURCE), None)
    if src is not None and src.bench:
        s.records[cands.SOURCE].size_mb, s.records[cands.SOURCE].file = src.bench.size_mb, src.file
        s.records[cands.SOURCE].ppl_tokens = next((a.n for a in src.accuracy if a.metric == "token_perplexity"), None)
    notes = [f"{Path(s.out, 'stages', STAGES['benchmark'])}: the last run; its report holds the paired timings and "
             "duels"]
    return chosen, notes


def nested(s) -> None:
    """Before the benchmark: a mix leaves when another mix of the same low type within the budget moves every group
    it moves and more. Each move was timed to save decode time, so the deeper mix is forecast faster; the two
    differ by a few percent of speed, inside a duel's interval, so benchmarking both made the tie between them, and
    with it the recommendation, turn on noise (three searches of SmolLM2 recommended three of its mixes, each tied
    with the next deeper one in one run and not in another)."""
    alive = [n for n in s.alive() if n in s.moved]

    def deeper(name: str) -> list[str]:
        low, groups = s.moved[name]
        return [n for n in alive if s.moved[n][0] == low and groups < s.moved[n][1]]

    kept = [n for n in alive if not deeper(n)]  # every other one has one of these among its deeper mixes
    for name in [n for n in alive if n not in kept]:
        low, groups = s.moved[name]
        best = max((n for n in deeper(name) if n in kept), key=lambda n: (len(s.moved[n][1]), n))
        s.leave(name, s.records[name].stage, f"forecast slower: {best} moves its groups and "
                f"{len(s.moved[best][1]) - len(groups)} more to {low}, each timed to save decode time, and is within "
                "the budget")


def _task_drop(report, name: str) -> float | None:
    from optkit.report.analysis import task_deltas

    drops = [-d.delta for d in task_deltas(report) if d.variant == name and d.delta is not None
             and d.metric.startswith("acc")]
    return max(drops) if drops else None
