"""Everything that can be checked before any variant runs: the device, the checkpoint's facts (from its config
or header), each variant's chain of steps against the formats methods accept and produce, each method's own
checks, the engines the steps lead to, and every eval task's data. A bad recipe stops here, with one line."""

from __future__ import annotations

from pydantic import ValidationError

from optkit import formats, loading, registry
from optkit.calibration import calibration_file
from optkit.checkpoints import Checkpoint
from optkit.engines.base import ModelInfo
from optkit.engines.method import format_problem
from optkit.errors import BadInput
from optkit.recipe import Recipe
from optkit.trust import Trust


def resolve_device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise BadInput("device 'cuda' requested but no CUDA GPU is visible; set device: cpu (or --device cpu)")
    return wanted


def model_info(ckpt: Checkpoint, dtype: str, device: str, trust_remote_code: bool,
               trust_pickle: bool = False, engine: str | None = None) -> ModelInfo:
    """Linear shapes and the starting format from the config or header alone: no weights are read."""
    return loading.describe(ckpt, dtype, device, trust_remote_code, engine=engine, trust_pickle=trust_pickle)


def check_variants(recipe: Recipe, ckpt: Checkpoint, device: str, source: str, trust: Trust | None = None) -> None:
    """Every variant from the engine it starts in (its own `engine`, or the checkpoint's default), each engine's
    facts about the checkpoint read once, with the trust the caller granted (trust.py)."""
    model, infos, trust = recipe.model, {}, trust or Trust()
    for i, variant in enumerate(recipe.variants):
        engine = loading.engine_name(ckpt, variant.engine, variant.steps)
        if engine not in infos:
            try:
                infos[engine] = model_info(ckpt, model.dtype, device, trust.trust_remote_code, trust.allow_pickle,
                                           engine)
            except BadInput as exc:
                if not variant.engine:
                    raise
                raise BadInput(f"{source}: variants[{i}] ({variant.name}) engine {variant.engine}: {exc}") from None
        check_variant(i, recipe, infos[engine], device, source)


def converters(have: str, need: tuple[str, ...]) -> list[str]:
    """Registered methods that turn a model in format `have` into one of `need` (the fix to suggest)."""
    out = []
    for name in registry.methods.names():
        try:
            cls = registry.methods.cls(name)
        except Exception:  # a plugin that does not import cannot be the suggestion
            continue
        if have in cls.accepts and cls.produces is not None and formats.name(cls.produces) in need:
            out.append(name)
    return out


def _params(method, step, where: str):
    try:
        return method.Params.model_validate(step.params)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        allowed = ", ".join(method.Params.model_fields)
        raise BadInput(f"{where}: params.{field}: {err['msg']} (params allowed: {allowed})") from None


def _named_step(step, where: str):
    """The step's method and its validated params: what its name and the recipe alone can tell."""
    try:
        method = registry.get(step.method)
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None
    params = _params(method, step, where)
    if step.auto_exclude is not None and not method.supports_auto_exclude:
        raise BadInput(f"{where}: does not support auto_exclude (it changes no layer's precision); "
                       "remove auto_exclude from this step")
    return method, params


def check_names(recipe: Recipe, source: str) -> None:
    """What names and params alone can tell (an unknown method or engine, a bad param), checked before the device
    is probed or the checkpoint's config is read: a typo costs no torch or transformers import."""
    for i, variant in enumerate(recipe.variants):
        if variant.engine:
            try:
                registry.engines.get(variant.engine)
            except BadInput as exc:
                raise BadInput(f"{source}: variants[{i}] ({variant.name}) engine {variant.engine}: {exc}") from None
        for n, step in enumerate(variant.steps, 1):
            _named_step(step, f"{source}: variants[{i}] ({variant.name}) step {n} ({step.method})")


def check_variant(index: int, recipe: Recipe, info: ModelInfo, device: str, source: str) -> None:
    variant = recipe.variants[index]
    info = ModelInfo(linears=info.linears, dtype=info.dtype, device=device, format=info.format)
    made_by = None  # the step that gave the model its current format
    chain = []  # (method, params) of every step, for the engine's own check of what they make
    for n, step in enumerate(variant.steps, 1):
        where = f"{source}: variants[{index}] ({variant.name}) step {n} ({step.method})"
        method, params = _named_step(step, where)
        chain.append((method, params))
        if step.auto_exclude is not None:
            try:
                calibration_file(step.auto_exclude.calibration.path)
            except BadInput as exc:
                raise BadInput(f"{where}: auto_exclude: {exc}") from None
        if device not in method.devices:
            need = method.device_note or f"runs on: {', '.join(method.devices)}"
            raise BadInput(f"{where}: cannot run on {device} ({need}); remove the variant or change device")
        if format_problem(method, info):
            fix = converters(info.format, method.accepts)
            if fix:
                label = " or ".join(formats.get(f).label for f in method.accepts)
                raise BadInput(f"{where}: needs {label}; add {{method: {fix[0]}}} before this step")
            raise BadInput(f"{where}: {format_problem(method, info, made_by)}")
        problems = method.check(info, params)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise BadInput(f"{where}: {problems[0]}{more}")
        info.dtype = method.output_dtype(info, params)
        fmt = method.output_format(info)
        if fmt != info.format:
            engine = formats.get(method.produces if method.produces is not None else fmt).engine
            try:
                registry.engines.get(engine)
            except BadInput as exc:
                raise BadInput(f"{where}: produces {formats.get(fmt).label}, which the {engine} engine runs: {exc}") \
                    from None
            info.format, made_by = fmt, f"after step {n}, {step.method}"
    engine = variant.engine or formats.get(info.format).engine
    problems = registry.engines.cls(engine)().check_served(info, chain) if engine in registry.engines.table() else []
    if problems:
        raise BadInput(f"{source}: variants[{index}] ({variant.name}) engine {engine}: {problems[0]}")


def check_eval(recipe: Recipe, source: str) -> None:
    """Every text and task must be found now, not after the first variants have spent minutes."""
    from optkit.data import text_file
    from optkit.evaluators.lm_eval import check_names, resolve

    spec = recipe.eval
    for field, sub in (("perplexity", spec.perplexity), ("fidelity", spec.fidelity)):
        if sub is not None:
            try:
                text_file(sub.path, f"eval.{field}.path")
            except BadInput as exc:
                raise BadInput(f"{source}: eval.{field}: {exc}") from None
    for i, task in enumerate(spec.tasks or []):
        try:
            resolve(task.name)
        except BadInput as exc:
            raise BadInput(f"{source}: eval.tasks[{i}] ({task.name}): {exc}") from None
    unknown = check_names([t.name for t in spec.tasks or []])
    if unknown:
        i, name, hint = unknown
        raise BadInput(f"{source}: eval.tasks[{i}] ({name}): {hint}")
