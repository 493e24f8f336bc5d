"""The pipeline's last round and the worker's duel job: the variant ranked first is timed head to head
(duel.py) against each contender report/decide.py picks, one duel job each, kept on resume like any result."""

from __future__ import annotations

from optkit.duel import MIN_ROUND_S, DuelSpec, head_to_head
from optkit.recipe import BenchSpec


def _side(job, variant, file: str | None, like):
    """One side of a duel job: the file a variant's run kept, opened by its engine where it is still there (no
    rebuild: a GGUF search candidate takes seconds to open and minutes to export again), else rebuilt from its
    steps as the variant's own worker built it."""
    from pathlib import Path

    from optkit import loading, registry
    from optkit.engines.method import apply_steps

    if file and Path(file).is_file():
        return registry.engines.get("llamacpp").open(file, like=like)
    if not variant.steps and loading.engine_name(job.checkpoint, variant.engine) == like.engine:
        return like
    lm = loading.load(job.checkpoint, job.model.dtype, job.device, job.trust.allow_pickle,
                      job.trust.trust_remote_code, loading.engine_name(job.checkpoint, variant.engine, variant.steps))
    return apply_steps(lm, variant.steps)[0]


def run_duel_job(job, cand) -> None:
    """The worker's side of a duel job (VariantJob.duel): both variants in this process, cand.head_to_head set."""
    from optkit import loading

    spec = job.duel
    like = loading.load(job.checkpoint, job.model.dtype, job.device, job.trust.allow_pickle,
                        job.trust.trust_remote_code, loading.engine_name(job.checkpoint, spec.a.engine))
    a = _side(job, spec.a, spec.files.get(spec.a.name), like)
    b = _side(job, spec.b, spec.files.get(spec.b.name), like)
    w = spec.workload
    bench = job.bench or BenchSpec()
    cand.head_to_head = head_to_head(a, b, (spec.a.name, spec.b.name), w, bench, spec.round_s, spec.rounds,
                                     settle=True)


def runoff(plan, report, run_dir, executor, board, resume: bool) -> list:
    """The pipeline's last round: the variant ranked first against the baseline is timed head to head against
    each contender (report/decide.py picks them), one duel job each; finished duels are kept on resume."""
    from pathlib import Path

    from optkit import reuse
    from optkit.report.recommend import runoff_pairs
    from optkit.workload import resolve

    recipe = plan.recipe
    jobs = {j.variant.name: j for j in plan.jobs}
    files = {c.name: c.file for c in report.variants if c.file}
    kept, placed = [], []
    for a, b in runoff_pairs(report):
        out = Path(run_dir) / "duels" / f"{a}--{b}.json"
        spec = DuelSpec(a=jobs[a].variant, b=jobs[b].variant, files={n: files[n] for n in (a, b) if n in files},
                        workload=resolve(recipe.workload, recipe.bench), rounds=recipe.bench.paired_rounds,
                        round_s=min(MIN_ROUND_S, recipe.bench.min_seconds / 2))
        job = reuse.stamp(jobs[a].model_copy(update={"duel": spec, "eval": None, "reference": None, "save_to": None,
                                                     "pair_with": None, "keep_in": None}))
        previous = reuse.previous(out) if resume else None
        if reuse.why_not(previous, job) is None and previous.head_to_head is not None:  # same two, same inputs
            kept.append(previous.head_to_head)
            continue
        key = f"{a} vs {b}"
        board.add(key, f"[+] {key} (head to head)")
        placed.append(job.placed(out, Path(run_dir) / "logs" / f"{a}--{b}.log", key))
    for job, cand in executor.run_all(placed, board):
        board.say(f"{job.where.key}: {cand.status}" + (f" ({cand.error})" if cand.error else ""))
        if cand.head_to_head is not None:
            kept.append(cand.head_to_head)
    return kept
