"""The only orchestrator: plan(recipe) checks everything cheap up front, run(plan) builds, evaluates
and benchmarks each variant in its own process and writes each result the moment it exists."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from optkit import models, registry
from optkit.errors import BadInput
from optkit.isolate import Job, run_isolated
from optkit.methods.base import ModelInfo
from optkit.recipe import Recipe
from optkit.results import Candidate, Report, write_model


class Plan(BaseModel):
    recipe: Recipe
    source: str  # where the recipe came from, for messages
    checkpoint: models.Checkpoint
    device: str
    jobs: list[Job]


def resolve_device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise BadInput("device 'cuda' requested but no CUDA GPU is visible; set device: cpu (or --device cpu)")
    return wanted


def model_info(ckpt: models.Checkpoint, dtype: str, device: str, trust_remote_code: bool) -> ModelInfo:
    """Linear shapes from the config alone (meta tensors: no weights are read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    location = ckpt.location
    if ckpt.kind == "artifact":
        return ModelInfo(linears={}, dtype=dtype, device=device, quantized=True)
    if ckpt.kind == "onnx":  # an exported folder: only ort.* steps may follow
        if dtype != "float32":
            raise BadInput(f"checkpoint {ckpt.given!r} is an ONNX export and runs in the dtype it was exported in; "
                           f"drop dtype {dtype} (--dtype / model.dtype)")
        return ModelInfo(linears={}, dtype=dtype, device=device, onnx=True)
    config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    linears = {n: (m.out_features, m.in_features) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear)}
    return ModelInfo(linears=linears, dtype=dtype, device=device)


def _check_variant(index: int, recipe: Recipe, info: ModelInfo, device: str, source: str) -> None:
    variant = recipe.variants[index]
    info = ModelInfo(linears=info.linears, dtype=info.dtype, device=device, quantized=info.quantized,
                     onnx=info.onnx)
    for n, step in enumerate(variant.steps, 1):
        where = f"{source}: variants[{index}] ({variant.name}) step {n} ({step.method})"
        try:
            method = registry.get(step.method)
        except BadInput as exc:
            raise BadInput(f"{where}: {exc}") from None
        try:
            params = method.Params.model_validate(step.params)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            allowed = ", ".join(method.Params.model_fields)
            raise BadInput(f"{where}: params.{field}: {err['msg']} (params allowed: {allowed})") from None
        if step.auto_exclude is not None and method.replaces_model and not method.convert_auto_exclude:
            raise BadInput(f"{where}: does not support auto_exclude (it changes no layer's precision); "
                           "remove auto_exclude from this step")
        if device not in method.devices:
            need = method.device_note or f"runs on: {', '.join(method.devices)}"
            raise BadInput(f"{where}: cannot run on {device} ({need}); remove the variant or change device")
        if method.runs_on == "onnxruntime" and not info.onnx:
            raise BadInput(f"{where}: needs an ONNX model; add {{method: onnx.export}} before this step")
        if method.runs_on == "torch" and info.onnx:
            raise BadInput(f"{where}: is a PyTorch method but an earlier step exported the model to ONNX; "
                           "move it before onnx.export or use an ort.* method")
        problems = method.check(info, params)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise BadInput(f"{where}: {problems[0]}{more}")
        info.dtype = method.output_dtype(info, params)
        info.quantized = info.quantized or method.quantizes
        info.onnx = info.onnx or method.to_onnx


def _check_tasks(recipe: Recipe, source: str) -> None:
    """Every eval task must find its data now, not after the first variants have spent minutes."""
    from optkit.evaluators.lm_eval import resolve

    for i, task in enumerate(recipe.eval.tasks or []):
        try:
            resolve(task.name)
        except BadInput as exc:
            raise BadInput(f"{source}: eval.tasks[{i}] ({task.name}): {exc}") from None


def plan(recipe: Recipe, source: str = "<recipe>", base_dir: Path | None = None) -> Plan:
    device = resolve_device(recipe.device)
    ckpt = models.prepare(models.resolve(recipe.model.checkpoint, base_dir))
    info = model_info(ckpt, recipe.model.dtype, device, recipe.model.trust_remote_code)
    for i in range(len(recipe.variants)):
        _check_variant(i, recipe, info, device, source)
    _check_tasks(recipe, source)
    jobs = [Job(variant=v, checkpoint=ckpt, model=recipe.model, device=device,
                eval=recipe.eval, bench=recipe.bench) for v in recipe.variants]
    return Plan(recipe=recipe, source=source, checkpoint=ckpt, device=device, jobs=jobs)


def _baseline_first(plan: Plan, run_dir: Path) -> list[Job]:
    """The baseline runs first wherever it is listed: with others to compare, its worker saves the reference
    next-token distributions (run_dir/reference/) that theirs compare to."""
    base = plan.recipe.baseline
    jobs = sorted(plan.jobs, key=lambda j: j.variant.name != base)
    spec = plan.recipe.eval.fidelity
    if spec is None or len(jobs) < 2 or jobs[0].variant.name != base:
        return jobs
    from optkit.evaluators.fidelity import reference_name

    first = jobs[0]
    ref = run_dir / "reference" / reference_name(spec, {
        "checkpoint": plan.checkpoint.location, "model": first.model.model_dump(), "device": plan.device,
        "steps": [s.model_dump() for s in first.variant.steps]})
    return [j.model_copy(update={"reference": str(ref), "is_baseline": j is first}) for j in jobs]


def run(plan: Plan, run_dir: Path, resume: bool = True, say: Callable[[str], None] = print) -> Report:
    from optkit.environment import environment
    from optkit.report import write_all

    run_dir = Path(run_dir)
    (run_dir / "variants").mkdir(parents=True, exist_ok=True)
    write_model(run_dir / "plan.json", plan)
    done: dict[str, Candidate] = {}
    for i, job in enumerate(_baseline_first(plan, run_dir), 1):
        name = job.variant.name
        out = run_dir / "variants" / f"{name}.json"
        lost_reference = job.is_baseline and not Path(job.reference).is_file()  # the others need it
        if resume and out.is_file() and not lost_reference:
            previous = Candidate.model_validate_json(out.read_text())
            if previous.status == "ok":
                say(f"[{i}/{len(plan.jobs)}] {name}: already done, kept from the previous run")
                done[name] = previous
                continue
        say(f"[{i}/{len(plan.jobs)}] {name}: building, evaluating, benchmarking ...")
        cand = run_isolated(job, out, run_dir / "logs" / f"{name}.log")
        done[name] = cand
        say(f"[{i}/{len(plan.jobs)}] {name}: {cand.status} in {cand.seconds:.0f}s"
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

