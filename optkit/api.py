"""The Python API, and the CLI's own core: every command parses its options, calls one function here and prints.

    import optkit
    report = optkit.run("recipes/demo.yaml", out="reports/demo")   # -> Report (report.json is written too)
    report.recommendation.variant, [v.name for v in report.frontier()]
    optkit.gate(report, {"max_ppl_increase": "5%"})                 # -> list of Verdict

Errors are the CLI's: BadInput (a recipe, path or option that cannot be used; nothing was run) and RunError.
Variants that fail do not raise: they are in the report with status "failed" and the error (check=True raises
RunError after the report is written, as the CLI exits 3). Importing this module imports no engine library."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit.errors import BadInput, RunError
from optkit.executors import Executor
from optkit.recipe import ExecutorSpec, GateSpec, Recipe, Step, load_recipe, parse_recipe
from optkit.results import Report as ReportData
from optkit.results import VariantResult, read_report

if TYPE_CHECKING:
    from optkit.gate import Verdict
    from optkit.report.wording import Recommendation

__all__ = ["Report", "bench", "evaluate", "export", "gate", "gate_rules", "prune", "quantize", "run", "search"]

Say = Callable[[str], None]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Report(ReportData):
    """report.json as the API returns it: the data (results.Report, whose fields it has) and its views, computed
    as the report's own tables compute them."""

    @classmethod
    def of(cls, data: ReportData) -> Report:
        """The API's view of a report the pipeline wrote (no copy, no validation again)."""
        return data if isinstance(data, cls) else cls.model_construct(_fields_set=data.model_fields_set, **dict(data))

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """A report.json, or the run folder holding one; BadInput when it is neither."""
        return cls.of(read_report(path))

    def frontier(self) -> list[VariantResult]:
        """The variants on the perplexity / decode-speed Pareto frontier (the report's stars), in report order."""
        from optkit.report.analysis import frontier, rows

        names = set(frontier(rows(self)))
        return [v for v in self.variants if v.name in names]

    @property
    def recommendation(self) -> Recommendation:
        """The variant to ship (.variant), the sentence saying why (.text, also str()), why not the others
        (.not_chosen)."""
        from optkit.report.wording import recommendation

        return recommendation(self)


def run(recipe: Recipe | dict | str | Path, out: str | Path | None = None, *, fresh: bool = False,
        device: str | None = None, executor: Executor | ExecutorSpec | dict | str | None = None,
        say: Say | None = None, live: bool = False, check: bool = False, allow_pickle: bool = False,
        trust_remote_code: bool = False, revision: str | None = None, workload: str | None = None,
        objective: str | None = None, concurrency: int | None = None) -> Report:
    """Build, evaluate and benchmark every variant of a recipe (a YAML path, a dict of its fields or a Recipe);
    write report.json and report.html into `out` (default reports/<name>) and return the report.

    fresh: redo every variant instead of resuming finished ones. device: override the recipe's. executor: the
    recipe's `executor:` section by default; a kind ("local", "ray"), a dict of ExecutorSpec fields that override
    the recipe's, an ExecutorSpec, or an Executor you made (you close it). say: where progress lines go (stderr);
    live: redraw one line per variant in place (a terminal). check: raise RunError when a variant failed.
    allow_pickle, trust_remote_code: load pickle weights / run the model's own code (only the caller grants these,
    never a recipe or an artifact: trust.py). revision: a hub id's branch, tag or commit. workload, objective,
    concurrency: the traffic to rank for, over the recipe's `workload:` ("2000/100,200/200:3": prompt/output tokens
    per request, weighted; "decode", "latency", "ttft" or "throughput"; requests served together)."""
    from optkit.search.command import with_workload

    spec, source, base_dir = _recipe(recipe)
    spec = with_workload(spec, workload, objective, concurrency)
    if device:
        spec = spec.model_copy(update={"device": device})
    if revision:
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"revision": revision})})
    return _execute(spec, source, out, fresh=fresh, base_dir=base_dir, executor=executor, say=say, live=live,
                    check=check, trust=_trust(allow_pickle, trust_remote_code))


def evaluate(checkpoint: str | Path, *, out: str | Path | None = None, max_tokens: int = 4096,
             text: str | Path | None = None, tasks: Iterable[str] | str | None = None, limit: int | None = None,
             engine: str | None = None, dtype: str = "float32", device: str = "cpu", say: Say | None = None,
             live: bool = False, check: bool = False, allow_pickle: bool = False, trust_remote_code: bool = False,
             revision: str | None = None) -> Report:
    """Token perplexity of a checkpoint (WikiText-2, or the text file `text`) and lm-eval `tasks` (names, or one
    comma-separated string; offline with OPTKIT_DATA), each limited to its first `limit` documents."""
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks or []) if t.strip()]
    if names:
        from optkit.evaluators.lm_eval import resolve

        for name in names:  # missing offline data is bad input: say so before loading any model
            resolve(name)
    ppl = {"max_tokens": max_tokens, "path": str(text) if text else None}
    specs = [{"name": n, "limit": limit} for n in names] or None
    return _one("eval", checkpoint, dtype, device, [], out, {"perplexity": ppl, "tasks": specs}, None,
                engine=engine, say=say, live=live, check=check, trust=_trust(allow_pickle, trust_remote_code),
                revision=revision)


def bench(checkpoint: str | Path, *, out: str | Path | None = None, prompt_len: int = 128,
          prompt_lens: list[int] | None = None, gen_len: int = 64, batch_sizes: list[int] | None = None,
          repeats: int = 5, min_seconds: float = 2.0, threads: int | None = None, engine: str | None = None,
          dtype: str = "float32", device: str = "cpu", say: Say | None = None, live: bool = False,
          check: bool = False, allow_pickle: bool = False, trust_remote_code: bool = False,
          revision: str | None = None, serving: list[int] | None = None) -> Report:
    """Benchmark a checkpoint: decode tokens/s per batch size (default [1]), prefill latency, time to first token
    at `prompt_lens`, end-to-end latency, peak memory, size and energy; `serving`: then an online serving sweep at
    these concurrencies (engines with a server: vLLM)."""
    spec = {"prompt_len": prompt_len, "gen_len": gen_len, "repeats": repeats, "min_seconds": min_seconds,
            "batch_sizes": list(batch_sizes or [1]), "prompt_lens": prompt_lens, "threads": threads,
            "max_repeats": max(repeats, 15), "serving": {"concurrency": serving} if serving else None}
    return _one("bench", checkpoint, dtype, device, [], out, None, spec, engine=engine, say=say, live=live,
                check=check, trust=_trust(allow_pickle, trust_remote_code), revision=revision)


def quantize(checkpoint: str | Path, method: str, out: str | Path, *, params: dict | None = None,
             auto_exclude: str | float | None = None, dtype: str = "float32", device: str = "cpu",
             say: Say | None = None, live: bool = False, allow_pickle: bool = False, trust_remote_code: bool = False,
             revision: str | None = None) -> Report:
    """Apply one method and write a reloadable artifact folder `out` (new or empty) that eval, bench and recipes
    accept as a checkpoint. auto_exclude: keep the most sensitive layers in higher precision until calibration
    perplexity is within this budget ("5%"). The report is that of the one-variant run (out/run)."""
    return _transform("quantize", checkpoint, method, out, params, auto_exclude, dtype, device, say, live,
                      _trust(allow_pickle, trust_remote_code), revision)


def prune(checkpoint: str | Path, method: str, out: str | Path, *, params: dict | None = None,
          auto_exclude: str | float | None = None, dtype: str = "float32", device: str = "cpu",
          say: Say | None = None, live: bool = False, allow_pickle: bool = False, trust_remote_code: bool = False,
          revision: str | None = None) -> Report:
    """quantize for pruning methods (prune.magnitude, prune.2to4, prune.wanda)."""
    if not method.startswith("prune."):
        raise BadInput(f"optkit prune takes a pruning method (prune.magnitude, prune.2to4, prune.wanda), "
                       f"not {method!r}; use optkit quantize for that")
    return _transform("prune", checkpoint, method, out, params, auto_exclude, dtype, device, say, live,
                      _trust(allow_pickle, trust_remote_code), revision)


def export(checkpoint: str | Path, out: str | Path, *, format: str = "onnx", opset: int | None = None,
           params: dict | None = None, dtype: str = "float32", device: str = "cpu", say: Say | None = None,
           live: bool = False, allow_pickle: bool = False, trust_remote_code: bool = False,
           revision: str | None = None) -> Report:
    """Export to another engine's format (a method <format>.export exists for each: onnx, gguf), checked against
    PyTorch logits; `out` is then a checkpoint that loads in that engine without optkit. The step's record
    (report.variants[0].steps[0].details) holds the validation figures."""
    from optkit import registry

    known = sorted(n.removesuffix(".export") for n in registry.methods.names() if n.endswith(".export"))
    if format not in known:
        raise BadInput(f"unknown export format {format!r}; known: {', '.join(known)} (--format {known[0]})")
    fields = registry.methods.cls(f"{format}.export").Params.model_fields
    if opset and "opset" not in fields:
        raise BadInput(f"--opset is for --format onnx, not {format}; remove it")
    given = {"provider": device, "opset": opset}  # the options this export's parameters have
    step = {k: v for k, v in given.items() if k in fields and v is not None} | (params or {})
    with _new_folder(Path(out)) as work:
        return _one("export", checkpoint, dtype, device, [{"method": f"{format}.export", "params": step}],
                    work / "run", None, None, say=say, live=live, save_to=work, check=True,
                    trust=_trust(allow_pickle, trust_remote_code), revision=revision)


def gate_rules(report: ReportData, rules: GateSpec | dict | None = None,
               against: ReportData | None = None) -> tuple[GateSpec, str]:
    """The rules a gate applies, and where they come from: `rules` when given, else with `against` "no regression
    beyond noise", else the recipe's `gates:`."""
    from pydantic import ValidationError

    from optkit.gate import regression_spec

    if isinstance(rules, GateSpec):
        return rules, "the rules given"
    given = {k: v for k, v in (rules or {}).items() if v is not None}
    if not given and against is not None:  # a regression gate: the recipe's baseline-relative gates do not apply
        return regression_spec(report, against), "no regression beyond noise vs the older report"
    if not given:
        return GateSpec.model_validate(report.recipe.get("gates") or {}), "the recipe's gates"
    try:
        return GateSpec(**given), "the options given"
    except ValidationError as exc:
        raise BadInput(f"bad gate option: {exc.errors()[0]['msg']}; write e.g. --max-ppl-increase 5%") from None


def gate(report: ReportData | str | Path, rules: GateSpec | dict | None = None, *, strict: bool = False,
         variants: Iterable[str] | None = None, against: ReportData | str | Path | None = None) -> list[Verdict]:
    """One Verdict per gated variant (.variant, .passed, .reasons; .line() in words): against the baseline, or
    with `against` (an older report) against each variant's namesake there. rules: a GateSpec or a dict of its
    fields ({"max_ppl_increase": "5%", "min_speedup": 1.2}); default: see gate_rules. Noise-aware unless
    strict: an accuracy rule fails only when its paired 95% CI lies beyond the limit."""
    from optkit.gate import evaluate as judge

    report = report if isinstance(report, ReportData) else read_report(report)
    old = against if against is None or isinstance(against, ReportData) else read_report(against)
    spec, _ = gate_rules(report, rules, old)
    if variants:
        spec = spec.model_copy(update={"variants": list(variants)})
    return judge(report, spec, strict=strict, against=old)


def search(source: str | Path, out: str | Path | None = None, *, budget: str | float | None = None,
           minutes: float | None = None, workload: str | None = None, objective: str | None = None,
           concurrency: int | None = None, executor: Executor | ExecutorSpec | dict | str | None = None,
           say: Say | None = None, allow_pickle: bool = False, trust_remote_code: bool = False,
           revision: str | None = None) -> Report:
    """The fastest variant of `source` (a checkpoint, or a recipe path with a `search:` section) within a
    perplexity budget (`budget`, e.g. "5%") and a time budget (`minutes`), for the workload; resumes what an
    earlier search into `out` (search_folder) finished. report.search holds every candidate, the stage it left at
    and why; the other arguments are run's."""
    from optkit.search.command import recipe_for, with_workload
    from optkit.search.run import search as run_search

    recipe, base_dir = recipe_for(str(source), None if budget is None else str(budget), minutes)
    recipe = with_workload(recipe, workload, objective, concurrency)
    if revision:
        recipe = recipe.model_copy(update={"model": recipe.model.model_copy(update={"revision": revision})})
    ex, own = _executor(recipe, executor)
    try:
        report = run_search(recipe, out_dir(recipe.name, out), base_dir, say=say or _stderr, executor=ex,
                            trust=_trust(allow_pickle, trust_remote_code))
    finally:
        if own:
            ex.close()
    return Report.of(report)


def search_folder(source: str | Path, out: str | Path | None = None) -> Path:
    """Where search(source, out) writes."""
    from optkit.search.command import recipe_for

    return out_dir(recipe_for(str(source), None, None)[0].name, out)


def out_dir(name: str, out: str | Path | None) -> Path:
    """Where a run writes: `out`, else reports/<recipe name>."""
    return Path(out) if out is not None else Path("reports") / name


def check_failed(report: ReportData, run_dir: Path) -> None:
    """RunError naming the failed variants, if any: the CLI's exit 3, after the report was written."""
    failed = [v.name for v in report.variants if v.status == "failed"]
    if failed:
        raise RunError(f"{len(failed)} variant(s) failed: {', '.join(failed)}; the report keeps every finished "
                       f"variant, the logs are in {run_dir / 'logs'}, and a rerun redoes only the failed ones")


def _trust(allow_pickle: bool, trust_remote_code: bool):
    from optkit.trust import Trust

    return Trust(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)


def _recipe(recipe: Recipe | dict | str | Path) -> tuple[Recipe, str, Path | None]:
    """(recipe, where it came from for messages, the folder relative checkpoint paths start from)."""
    if isinstance(recipe, Recipe):
        return recipe, "<recipe>", None
    if isinstance(recipe, dict):
        return parse_recipe(recipe, "<recipe dict>"), "<recipe dict>", None
    if isinstance(recipe, (str, Path)):
        return load_recipe(recipe), str(recipe), Path(recipe).parent
    raise BadInput(f"a recipe is a YAML path, a dict or a Recipe, not {type(recipe).__name__}")


def _executor(recipe: Recipe, executor: Executor | ExecutorSpec | dict | str | None) -> tuple[Executor, bool]:
    """(the executor, whether this call made it and so closes it)."""
    from optkit import executors

    if isinstance(executor, Executor):
        return executor, False
    if isinstance(executor, ExecutorSpec):
        return executors.create(executor), True
    given = {"kind": executor} if isinstance(executor, str) else dict(executor or {})
    spec = (recipe.executor or ExecutorSpec()).model_dump() | given
    if given.get("kind") == "local" and not given.get("address"):
        spec["address"] = None  # the recipe's cluster, not wanted this time
    if spec["address"] and spec["kind"] != "ray":
        raise BadInput("--address is for the ray executor; add --executor ray")
    return executors.create(ExecutorSpec(**spec)), True  # a missing library, a dead address: BadInput here


def _execute(recipe: Recipe, source: str, out: str | Path | None, fresh: bool, base_dir: Path | None = None,
             executor: Executor | ExecutorSpec | dict | str | None = None, say: Say | None = None,
             live: bool = False, save_to: Path | None = None, check: bool = False, trust=None) -> Report:
    from optkit import pipeline

    run_dir = out_dir(recipe.name, out)
    ex, own = _executor(recipe, executor)
    try:
        plan = pipeline.plan(recipe, source, base_dir, save_to, device=ex.device(recipe.device), trust=trust)
        report = pipeline.run(plan, run_dir, resume=not fresh, say=say or _stderr, executor=ex, live=live)
    finally:
        if own:
            ex.close()
    if check:
        check_failed(report, run_dir)
    return Report.of(report)


def _one(name: str, checkpoint: str | Path, dtype: str, device: str, steps: list, out: str | Path | None,
         evaluation: dict | None, bench_spec: dict | None, engine: str | None = None, say: Say | None = None,
         live: bool = False, save_to: Path | None = None, check: bool = False, trust=None,
         revision: str | None = None) -> Report:
    """A one-variant recipe from a command's options, run fresh."""
    model = {"checkpoint": str(checkpoint), "dtype": dtype} | ({"revision": revision} if revision else {})
    data: dict[str, Any] = {
        "name": name, "model": model, "device": device,
        "variants": [{"name": name, "steps": steps, "engine": engine}],
        "eval": evaluation or {"perplexity": None}, "bench": bench_spec}
    return _execute(parse_recipe(data, "command line"), "command line", out, fresh=True, say=say, live=live,
                    save_to=save_to, check=check, trust=trust)


def _transform(name: str, checkpoint: str | Path, method: str, out: str | Path, params: dict | None,
               auto_exclude: str | float | None, dtype: str, device: str, say: Say | None, live: bool, trust=None,
               revision: str | None = None) -> Report:
    from pydantic import ValidationError

    try:
        step = Step(method=method, params=params or {},
                    auto_exclude={"max_ppl_increase": auto_exclude} if auto_exclude is not None else None)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise BadInput(f"bad --auto-exclude {auto_exclude!r}: {msg}; write e.g. 5%") from None
    with _new_folder(Path(out)) as work:
        return _one(name, checkpoint, dtype, device, [step.model_dump()], work / "run", None, None, say=say,
                    live=live, save_to=work, check=True, trust=trust, revision=revision)


@contextmanager
def _new_folder(out: Path):
    """A work folder beside `out`, renamed to `out` only when the block succeeds: no half-written artifact. A
    failed run keeps it (its logs say why), an empty one goes."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"output {out} already exists and is not an empty folder; pick a new -o folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield work
    except BaseException:
        if not (work / "run" / "logs").is_dir():
            shutil.rmtree(work, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    os.replace(work, out)
