"""The only orchestrator: plan(recipe) checks everything cheap up front (preflight.py), run(plan) hands the
variants to an executor, which runs each in its own worker process, and writes each result the moment it
exists, then the report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel

from optkit import checkpoints, preflight
from optkit.recipe import Recipe
from optkit.results import Candidate, Report, write_model
from optkit.worker import Job, run_job

# the names tests and the first wave used
resolve_device, model_info = preflight.resolve_device, preflight.model_info


class Plan(BaseModel):
    recipe: Recipe
    source: str  # where the recipe came from, for messages
    checkpoint: checkpoints.Checkpoint
    device: str
    jobs: list[Job]


def plan(recipe: Recipe, source: str = "<recipe>", base_dir: Path | None = None, save_to: Path | None = None) -> Plan:
    """Preflight the recipe; save_to (one-variant plans: optkit quantize / prune / export) writes the built
    model there as an artifact."""
    device = preflight.resolve_device(recipe.device)
    ckpt = checkpoints.resolve(recipe.model.checkpoint, base_dir)
    preflight.check_variants(recipe, ckpt, device, source)
    preflight.check_eval(recipe, source)
    jobs = [Job(variant=v, checkpoint=ckpt, model=recipe.model, device=device, eval=recipe.eval,
                bench=recipe.bench, save_to=str(save_to) if save_to else None) for v in recipe.variants]
    return Plan(recipe=recipe, source=source, checkpoint=ckpt, device=device, jobs=jobs)


def _baseline_first(plan: Plan, run_dir: Path) -> list[Job]:
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


def _paired(plan: Plan, jobs: list[Job]) -> list[Job]:
    """Every benchmarked variant but the baseline also times itself against the baseline, in its own process."""
    base = next((j.variant for j in jobs if j.variant.name == plan.recipe.baseline), None)
    if base is None or len(jobs) < 2:
        return jobs
    return [j.model_copy(update={"pair_with": base}) if j.variant.name != base.name and j.bench
            and j.bench.paired_rounds else j for j in jobs]


class LocalExecutor:
    """One variant after another on this machine, each in a fresh process."""

    def run(self, jobs: list[Job], run_dir: Path, label: Callable[[Job], str],
            say: Callable[[str], None]) -> Iterator[Candidate]:
        for job in jobs:
            say(f"{label(job)}: building, evaluating, benchmarking ...")
            name = job.variant.name
            yield run_job(job, run_dir / "variants" / f"{name}.json", run_dir / "logs" / f"{name}.log")


def run(plan: Plan, run_dir: Path, resume: bool = True, say: Callable[[str], None] = print,
        executor=None) -> Report:
    from optkit.environment import environment
    from optkit.report import write_all

    run_dir = Path(run_dir)
    (run_dir / "variants").mkdir(parents=True, exist_ok=True)
    write_model(run_dir / "plan.json", plan)
    ordered = [j.model_copy(update={"keep_in": str(run_dir / "artifacts")})  # files to deploy (GGUF) go here
               for j in _paired(plan, _baseline_first(plan, run_dir))]
    index = {j.variant.name: i for i, j in enumerate(ordered, 1)}
    label = lambda j: f"[{index[j.variant.name]}/{len(ordered)}] {j.variant.name}"  # noqa: E731
    done: dict[str, Candidate] = {}
    todo = []
    for job in ordered:
        out = run_dir / "variants" / f"{job.variant.name}.json"
        lost_reference = job.is_baseline and not Path(job.reference.path).is_file()  # the others need it
        if resume and out.is_file() and not lost_reference:
            previous = Candidate.model_validate_json(out.read_text())
            if previous.status == "ok":
                say(f"{label(job)}: already done, kept from the previous run")
                done[job.variant.name] = previous
                continue
        todo.append(job)
    jobs = {j.variant.name: j for j in todo}
    for cand in (executor or LocalExecutor()).run(todo, run_dir, label, say):
        done[cand.name] = cand
        say(f"{label(jobs[cand.name])}: {cand.status} in {cand.seconds:.0f}s"
            + (f" ({cand.error})" if cand.error else ""))
    report = Report(
        run=run_dir.name,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        checkpoint=plan.checkpoint.given,
        recipe=plan.recipe.model_dump(mode="json"),
        environment=environment(plan.device),
        baseline=plan.recipe.baseline,
        variants=[done[j.variant.name] for j in plan.jobs],
    )
    write_all(report, run_dir)
    return report
