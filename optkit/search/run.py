"""optkit search: the fastest variant of a model within an accuracy budget, for the recipe's workload.

Stages, cheapest first; a candidate leaves at the first stage that shows it cannot win, and the report keeps it
with that stage and the reason:

    sensitivity  one job: each tensor group quantized alone, KL from the source on calibration text, and each
                 uniform type's whole file timed head to head with the source (mixes only)
    forecast     no run: the timed speed-ups order the candidates (a mix's: the source's time less what its groups'
                 moves saved); timed clearly slower than the source, or bound by bytes read per decoded token below
                 the source's measured speed, a candidate cannot win (decode objective)
    screen       a run: KL and perplexity on a few hundred test tokens; out when the paired 95% CI is all over budget
    perplexity   a run: perplexity on ppl_tokens with its paired CI; out when it is over budget, or when a mix of
                 the same low type within budget moves its groups and more (forecast faster)
    benchmark    a run: the workload benchmark, paired against the source in one process, the contenders timed
                 head to head (pipeline runoff) and tasks where a task budget is set; out when dominated

Each stage is an ordinary pipeline run (stages/<n>-<name>/ under the search folder), so it resumes after a crash
and runs on the local or the Ray executor; every candidate is rebuilt from recorded steps (gguf.quantize on the
source), and the benchmarked ones are GGUF files llama.cpp loads as they are (stages/3-benchmark/artifacts/).
The source, as it is, is a candidate throughout and every ratio is against it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from optkit.recipe import EvalSpec, FidelitySpec, PerplexitySpec, Recipe
from optkit.results import Report
from optkit.search import candidates as cands
from optkit.searchrecord import SearchCandidate, SearchResult, StageTime
from optkit.searchspec import STAGES, SearchSpec


class Search:
    """One search's state: its candidates (as variants and as records), its clock and where it writes."""

    def __init__(self, recipe: Recipe, out: Path, base_dir: Path | None, executor, say: Callable[[str], None],
                 trust=None):
        from optkit import checkpoints
        from optkit.trust import Trust

        self.recipe, self.out, self.base_dir, self.executor, self.say = recipe, Path(out), base_dir, executor, say
        self.trust = trust or Trust()  # the caller's flags only, as for optkit run (trust.py)
        self.spec: SearchSpec = recipe.search or SearchSpec()
        self.ckpt = checkpoints.resolve(recipe.model.checkpoint, base_dir, recipe.model.revision)
        self.device = executor.device(recipe.device)
        self.variants: dict[str, object] = {}
        self.records: dict[str, SearchCandidate] = {}
        self.stages: list[StageTime] = []
        self.started = time.perf_counter()
        self.in_runs = 0.0  # seconds inside stage runs and jobs: everything else is the search's own bookkeeping
        self.sensitivity = None
        self.moved: dict[str, tuple[str, frozenset]] = {}  # mix name -> (its low type, the groups it moves)

    # bookkeeping -------------------------------------------------------------------------------------------------
    def add(self, variant, kind: str, **facts) -> None:
        if variant.name in self.records or variant.name == cands.SOURCE:
            return
        self.variants[variant.name] = variant
        self.records[variant.name] = cands.record(variant, kind, **facts)

    def alive(self) -> list[str]:
        """Candidates still in the search (the source is in every stage anyway, as the baseline)."""
        return [n for n, r in self.records.items() if r.left is None and r.kind != "source"]

    def leave(self, name: str, stage: str, why: str) -> None:
        self.records[name].stage, self.records[name].left = stage, why
        self.say(f"search: {name} leaves at {stage}: {why}")

    def left_s(self) -> float:
        return self.spec.time_budget_min * 60 - (time.perf_counter() - self.started)

    def stage(self, name: str, names: list[str], eval_spec: EvalSpec, bench, source_from: str | None = None) -> Report:
        """One pipeline run over the source and `names`, in its own folder (resumed when it exists); source_from:
        the stage whose result for the source this one keeps (stages.reuse_source)."""
        from optkit import pipeline
        from optkit.search import stages

        recipe = self.recipe.model_copy(update={
            "name": f"{self.recipe.name}-{name}", "baseline": cands.SOURCE, "eval": eval_spec, "bench": bench,
            "variants": [cands.source_variant(self.ckpt), *(self.variants[n] for n in names)], "search": None,
            "gates": None})
        started, now = time.perf_counter(), time.time()
        plan = pipeline.plan(Recipe.model_validate(recipe.model_dump()), f"search stage {name}", self.base_dir,
                             device=self.device, trust=self.trust)
        if source_from:
            stages.reuse_source(self, source_from, name, plan)
        report = pipeline.run(plan, self.out / "stages" / STAGES[name], resume=True, say=self.say,
                              executor=self.executor)
        wall = time.perf_counter() - started
        self.in_runs += wall
        worker = sum(c.seconds for c in report.variants if c.timeline and c.timeline[0].start >= now)  # not resumed
        self.stages.append(StageTime(stage=name, candidates=len(names), wall_s=wall, worker_s=worker))
        for n in names:
            self.records[n].stage = name
        return report

    # the result --------------------------------------------------------------------------------------------------
    def result(self, chosen: str | None = None, notes: list[str] | None = None) -> SearchResult:
        from optkit import workload

        w = workload.resolve(self.recipe.workload, self.recipe.bench)
        wall = time.perf_counter() - self.started
        return SearchResult(source=self.ckpt.given, max_ppl_increase=self.spec.max_ppl_increase,
                            time_budget_s=self.spec.time_budget_min * 60, objective=w.objective,
                            candidates=list(self.records.values()), sensitivity=self.sensitivity,
                            stages=self.stages, wall_s=wall, bookkeeping_s=max(0.0, wall - self.in_runs),
                            chosen=chosen, notes=notes or [])

    def save(self, **kw) -> SearchResult:
        from optkit.results import write_model

        res = self.result(**kw)
        write_model(self.out / "search.json", res)
        return res


def ppl_eval(tokens: int, tasks=None, fidelity: FidelitySpec | None = None) -> EvalSpec:
    return EvalSpec(perplexity=PerplexitySpec(max_tokens=tokens, window=512, stride=256), fidelity=fidelity,
                    tasks=tasks)


def search(recipe: Recipe, out: Path, base_dir: Path | None = None, say: Callable[[str], None] = print,
           executor=None, trust=None) -> Report:
    """Run the whole search (resuming whatever a previous run in `out` finished); the final report with
    report.search filled, also written to out/report.json and out/report.html. api.search is the public door."""
    from optkit import executors
    from optkit.recipe import ExecutorSpec

    executor = executor or executors.create(recipe.executor or ExecutorSpec())
    try:
        return _search(Search(recipe, out, base_dir, executor, say, trust))
    finally:
        executor.close()


def _search(s: Search) -> Report:
    from optkit.report import write_all
    from optkit.search import stages

    types, sizes, widths = stages.source_tensors(s)
    s.records[cands.SOURCE] = SearchCandidate(name=cands.SOURCE, kind="source", stage="benchmark",
                                              engine=cands.source_variant(s.ckpt).engine)
    for v in cands.uniform(s.ckpt, s.spec, types) if "llamacpp" in s.spec.engines else []:
        s.add(v, "uniform")
    for v in cands.other_engines(s.spec):
        s.add(v, "uniform")
    for v in s.recipe.variants if s.recipe.search is not None else []:
        s.add(v, "recipe")
    if s.spec.mixes is not None and "llamacpp" in s.spec.engines:
        stages.add_mixes(s, types)
    bench = s.stage("benchmark", [], ppl_eval(s.spec.ppl_tokens), s.recipe.bench)  # the source alone, first
    stages.forecast(s, bench, types, sizes, widths)
    s.save()
    picked = stages.fit_time(s, "screen", s.alive())
    stages.screen(s, s.stage("screen", picked, ppl_eval(
        s.spec.screen_tokens, fidelity=FidelitySpec(samples=max(1, s.spec.screen_tokens // 128), seq_len=128)), None))
    s.save()
    picked = stages.fit_time(s, "perplexity", s.alive())
    # the source was scored on the same tokens in the first benchmark run: no second load
    stages.perplexity(s, s.stage("perplexity", picked, ppl_eval(s.spec.ppl_tokens), None, source_from="benchmark"))
    s.save()
    stages.nested(s)
    picked = stages.fit_time(s, "benchmark", s.alive())
    report = s.stage("benchmark", picked, ppl_eval(s.spec.ppl_tokens, s.recipe.eval.tasks), s.recipe.bench)
    chosen, notes = stages.benchmark(s, report)
    report.search = s.save(chosen=chosen, notes=notes)
    write_all(report, s.out)
    return report
