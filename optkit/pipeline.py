"""The only orchestrator: plan(recipe) checks everything cheap up front (preflight.py), run(plan) hands the
variants to an executor, which runs each in its own worker process, and writes each result the moment it
exists, then the report."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from optkit import checkpoints, preflight, reuse, runlock
from optkit.executors import Executor
from optkit.job import VariantJob
from optkit.live import Board
from optkit.recipe import Recipe
from optkit.report import hardware
from optkit.results import Report, SourceRecord, VariantResult, write_model
from optkit.trust import Trust

# the names tests and the first wave used
resolve_device, model_info = preflight.resolve_device, preflight.model_info


class Plan(BaseModel):
    recipe: Recipe
    source: str  # where the recipe came from, for messages
    checkpoint: checkpoints.Checkpoint
    device: str
    jobs: list[VariantJob]
    trust: Trust = Trust()  # the command line's, never a file's (trust.py)


def plan(recipe: Recipe, source: str = "<recipe>", base_dir: Path | None = None, save_to: Path | None = None,
         device: str | None = None, trust: Trust | None = None) -> Plan:
    """Preflight the recipe; save_to (one-variant plans: optkit quantize / prune / export) writes the built
    model there as an artifact; device: already settled by the executor (a cluster's GPUs, not this machine's);
    trust: what the person running optkit allowed (--allow-pickle, --trust-remote-code)."""
    from optkit.finite import check_weights

    trust = trust or Trust()
    preflight.check_names(recipe, source)
    device = device or preflight.resolve_device(recipe.device)
    ckpt = checkpoints.resolve(recipe.model.checkpoint, base_dir, recipe.model.revision)
    preflight.check_variants(recipe, ckpt, device, source, trust)
    preflight.check_eval(recipe, source)
    if ckpt.kind in ("folder", "artifact"):
        check_weights(ckpt.location)  # NaN weights: bad input now, not meaningless numbers later
    jobs = [VariantJob(variant=v, checkpoint=ckpt, model=recipe.model, device=device, eval=recipe.eval,
                       bench=recipe.bench, save_to=str(save_to) if save_to else None, trust=trust,
                       timeout_s=recipe.timeout_s, workload=recipe.workload) for v in recipe.variants]
    return Plan(recipe=recipe, source=source, checkpoint=ckpt, device=device, jobs=jobs, trust=trust)


def _baseline_first(plan: Plan, run_dir: Path) -> list[VariantJob]:
    """The baseline runs first wherever it is listed: with others to compare, its worker saves the reference
    next-token distributions (run_dir/reference/) that theirs compare to."""
    from optkit.evaluators.fidelity import Reference, reference_name

    base = plan.recipe.baseline
    jobs = sorted(plan.jobs, key=lambda j: j.variant.name != base)
    spec = plan.recipe.eval.fidelity
    if spec is None or len(jobs) < 2 or jobs[0].variant.name != base:
        return jobs
    first = jobs[0]
    path = str(run_dir / "reference" / reference_name(spec, {
        "checkpoint": plan.checkpoint.location, "model": first.model.model_dump(), "device": plan.device,
        "steps": [s.model_dump() for s in first.variant.steps]}))
    return [j.model_copy(update={"reference": Reference(path=path, role="save" if j is first else "compare")})
            for j in jobs]


def _paired(plan: Plan, jobs: list[VariantJob]) -> list[VariantJob]:
    """Every benchmarked variant but the baseline also times itself against the baseline, in its own process."""
    base = next((j.variant for j in jobs if j.variant.name == plan.recipe.baseline), None)
    if base is None or len(jobs) < 2:
        return jobs
    return [j.model_copy(update={"pair_with": base}) if j.variant.name != base.name and j.bench
            and j.bench.paired_rounds else j for j in jobs]


def _bench_only(plan: Plan, name: str) -> VariantJob:
    """The variant's job benchmarking only: no evaluation, no fidelity reference, no artifact, no serving sweep."""
    job = next(j for j in plan.jobs if j.variant.name == name)
    bench = job.bench.model_copy(update={"serving": None}) if job.bench else None
    return reuse.stamp(job.model_copy(update={"eval": None, "reference": None, "save_to": None, "pair_with": None,
                                              "bench": bench}))


def _resumed(out: Path, job: VariantJob) -> VariantResult | None:
    """A benchmark a previous run finished (ok, with its timings, from the same inputs) at out, else None."""
    previous = reuse.previous(out)
    return previous if reuse.why_not(previous, job) is None and previous.bench is not None else None


def _class_baselines(plan: Plan, done: dict[str, VariantResult], run_dir: Path, executor: Executor, board: Board,
                     resume: bool) -> list[VariantResult]:
    """Speed-ups compare like with like: when the variants were benchmarked on more than one hardware class,
    the baseline is benchmarked again (no evaluation) on a node of each class it did not run on."""
    base = done.get(plan.recipe.baseline)
    if base is None or base.bench is None or base.node is None:
        return []
    nodes: dict[str, list[str]] = {}
    for c in done.values():
        if c.bench is not None and c.node is not None:
            nodes.setdefault(c.node.hardware_class, []).extend([c.node.node_id] if c.node.node_id else [])
    kept, jobs = [], []
    job = _bench_only(plan, base.name)
    for cls, ids in nodes.items():
        if cls == base.node.hardware_class:
            continue
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", cls).strip("-")[:60] + "-" + hashlib.sha1(cls.encode()).hexdigest()[:6]
        out = run_dir / "baselines" / f"{slug}.json"
        previous = _resumed(out, job) if resume else None
        if previous is not None and previous.node and previous.node.hardware_class == cls:
            kept.append(previous)
            continue
        key = f"{base.name}@{cls}"
        board.add(key, f"[+] {base.name} on {cls}")
        jobs.append(job.placed(out, run_dir / "logs" / f"{base.name}@{slug}.log", key, list(dict.fromkeys(ids))))
    for placed, cand in executor.run_all(jobs, board):
        board.say(f"baseline {base.name} benchmarked on {placed.where.key.partition('@')[2]}: {cand.status}"
                  + (f" ({cand.error})" if cand.error else ""))
        kept.append(cand)
    return kept


def _baseline_again(plan: Plan, done: dict[str, VariantResult], run_dir: Path, executor: Executor, board: Board,
                    resume: bool) -> VariantResult | None:
    """When some variant's speed-up cannot be paired (no room for two models, an older result), the baseline is
    benchmarked once more after the last variant: if the machine drifted between the two, the report says so."""
    base = done.get(plan.recipe.baseline)
    unpaired = [c for c in done.values() if c.name != plan.recipe.baseline and c.status == "ok" and c.bench
                and c.bench.paired is None and hardware.of(c) == hardware.of(base)] if base else []
    if base is None or base.status != "ok" or base.bench is None or not unpaired:
        return None
    out = run_dir / "baselines" / "again.json"
    job = _bench_only(plan, base.name)
    previous = _resumed(out, job) if resume else None
    if previous is not None:
        return previous
    key = f"{base.name} again"
    board.add(key, f"[+] {base.name} again (drift check for {', '.join(c.name for c in unpaired)})")
    nodes = [base.node.node_id] if base.node and base.node.node_id else None
    for _, cand in executor.run_all([job.placed(out, run_dir / "logs" / f"{base.name}@again.log", key, nodes)], board):
        board.say(f"baseline {base.name} benchmarked again: {cand.status}" + (f" ({cand.error})" if cand.error else ""))
        return cand if cand.status == "ok" else None
    return None


def run(plan: Plan, run_dir: Path, resume: bool = True, say: Callable[[str], None] = print,
        executor: Executor | None = None, live: bool = False) -> Report:
    """executor: executors.create(spec)'s (default: local); live: redraw a line per variant (a terminal). The run
    folder is this process's alone while it runs (runlock.py)."""
    run_dir = Path(run_dir)
    with runlock.hold(run_dir):
        return _run(plan, run_dir, resume, say, executor, live)


def _tidy(run_dir: Path) -> None:
    """What a killed run can leave behind: job files and half-written temporary files (atomic_write's)."""
    for folder in (run_dir / "variants", run_dir / "baselines", run_dir):
        for stale in folder.glob(".*.json.*") if folder.is_dir() else []:
            stale.unlink(missing_ok=True)
        for stale in folder.glob(".*.job.json") if folder.is_dir() else []:
            stale.unlink(missing_ok=True)


def _source(ckpt: checkpoints.Checkpoint) -> SourceRecord:
    sha = checkpoints.content_hash(ckpt.location) if ckpt.kind != "hub" else None
    return SourceRecord(given=ckpt.given, kind=ckpt.kind, location=ckpt.location, revision=ckpt.revision,
                        commit=ckpt.commit, sha256=sha)


def _run(plan: Plan, run_dir: Path, resume: bool, say: Callable[[str], None], executor, live: bool) -> Report:
    from optkit.environment import environment
    from optkit.eta import Eta, guesses
    from optkit.executors.local import LocalExecutor
    from optkit.finite import nonfinite
    from optkit.report import write_all

    _tidy(run_dir)
    (run_dir / "variants").mkdir(parents=True, exist_ok=True)
    write_model(run_dir / "plan.json", plan)
    ordered = [reuse.stamp(j.model_copy(update={"keep_in": str(run_dir / "artifacts")}))  # files to deploy go there
               for j in _paired(plan, _baseline_first(plan, run_dir))]
    index = {j.variant.name: i for i, j in enumerate(ordered, 1)}
    label = lambda j: f"[{index[j.variant.name]}/{len(ordered)}] {j.variant.name}"  # noqa: E731
    done: dict[str, VariantResult] = {}
    todo = []
    for job in ordered:
        out = run_dir / "variants" / f"{job.variant.name}.json"
        previous = reuse.previous(out) if resume else None
        why = reuse.why_not(previous, job)
        if why is None and job.is_baseline and not Path(job.reference.path).is_file():
            why = "its fidelity reference is gone and the others need it"
        if why is None:
            say(f"{label(job)}: already done, kept from the previous run (same inputs)")
            done[job.variant.name] = previous
            continue
        if previous is not None and previous.status == "ok":
            say(f"{label(job)}: computing again: {why}")
        todo.append(job)
    executor = executor or LocalExecutor()
    board = Board({j.variant.name: label(j) for j in todo}, say, live, eta=Eta(guesses(plan) if todo else {}))
    placed = [j.placed(run_dir / "variants" / f"{j.variant.name}.json", run_dir / "logs" / f"{j.variant.name}.log")
              for j in todo]
    try:
        for job, cand in executor.run_all(placed, board):
            bad = nonfinite(cand)
            if bad:  # data, not a crash: recorded, shown, and the gate fails it
                cand.warnings.append(f"non-finite result: {'; '.join(bad[:4])} (a diverged model, a zero-time sample "
                                     "or non-finite weights): not a measurement, and it fails every gate")
                write_model(job.where.out, cand)
            done[cand.name] = cand
            board.say(f"{label(job)}: {cand.status} in {cand.seconds:.0f}s"
                      + (f" ({cand.error})" if cand.error else "") + (f" ({bad[0]})" if bad else "") + board.left())
        extra = _class_baselines(plan, done, run_dir, executor, board, resume) if plan.recipe.bench else []
        again = _baseline_again(plan, done, run_dir, executor, board, resume) if plan.recipe.bench else None
        report = Report(
            run=run_dir.name,
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            checkpoint=plan.checkpoint.given,
            source=_source(plan.checkpoint),
            recipe=plan.recipe.model_dump(mode="json"),
            environment=environment(plan.device),
            baseline=plan.recipe.baseline,
            variants=[done[j.variant.name] for j in plan.jobs],
            class_baselines=extra,
            baseline_again=again,
        )
        if plan.recipe.bench and plan.recipe.bench.paired_rounds:  # contenders timed against each other
            from optkit.runoff import runoff

            report.duels = runoff(plan, report, run_dir, executor, board, resume)
    finally:
        board.close()
    write_all(report, run_dir)
    return report
