"""The command line. Every command builds a Recipe (a one-variant one for quantize/eval/bench) and
calls the one pipeline; heavy libraries are imported inside commands so --help stays fast."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import click
import yaml

from optkit import __version__
from optkit.errors import BadInput, OptkitError, RunError, quiet_libraries


def _fail(exc: OptkitError) -> None:
    click.echo(f"optkit: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _params(pairs: tuple[str, ...]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"bad --param {pair!r}; write it as key=value, e.g. -p group_size=32")
        out[key] = yaml.safe_load(value)
    return out


def _trust(allow_pickle: bool, trust_remote_code: bool):
    from optkit.trust import Trust

    return Trust(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)


def trust_options(command):
    """--allow-pickle, --trust-remote-code and --revision: on every command that loads a model. Trust is granted
    here, per invocation, and nowhere else (a recipe or an artifact cannot grant it)."""
    command = click.option("--revision", help="a hub id's branch, tag or commit (default: main); the commit it "
                           "resolves to is recorded in the report and in every cache key")(command)
    command = click.option("--trust-remote-code", is_flag=True, help="run the model's own Python code (config "
                           "auto_map) from its folder or the hub: only for a source you trust")(command)
    command = click.option("--trust-pickle", "allow_pickle", is_flag=True, hidden=True)(command)  # the old name
    return click.option("--allow-pickle", "allow_pickle", is_flag=True, help="load pickle weights (.bin/.pt), "
                        "which can run code when loaded: only for a source you trust")(command)


def _sigterm_exits() -> None:
    """SIGTERM (a CI cancel, `timeout`) unwinds like Ctrl-C: the worker's process group is killed, the run folder's
    lock released, instead of the orchestrator vanishing mid-write."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _execute(recipe, source: str, out: Path | None, fresh: bool, base_dir: Path | None = None, show=None,
             save_to: Path | None = None, trust=None):
    from optkit import executors, pipeline
    from optkit.recipe import ExecutorSpec
    from optkit.report.summary import text_table

    _sigterm_exits()
    executor = executors.create(recipe.executor or ExecutorSpec())  # a missing library, a dead address: here
    try:
        plan = pipeline.plan(recipe, source, base_dir, save_to, device=executor.device(recipe.device), trust=trust)
        run_dir = out or Path("reports") / recipe.name
        report = pipeline.run(plan, run_dir, resume=not fresh, say=lambda s: click.echo(s, err=True),
                              executor=executor, live=sys.stderr.isatty())
    finally:
        executor.close()
    if show is not False:  # False: the caller prints its own summary
        click.echo((show or text_table)(report))
        click.echo(f"\nwrote {run_dir / 'report.json'} and {run_dir / 'report.html'}")
    failed = [v.name for v in report.variants if v.status == "failed"]
    if failed:
        raise RunError(f"{len(failed)} variant(s) failed: {', '.join(failed)}; the report keeps every finished "
                       f"variant, the logs are in {run_dir / 'logs'}, and a rerun redoes only the failed ones")
    return report


def _single(name: str, checkpoint: str, dtype: str, device: str, steps: list, out: Path | None,
            evaluate: dict | None, bench: dict | None, show=None, save_to: Path | None = None,
            engine: str | None = None, trust=None, revision: str | None = None):
    from optkit.recipe import parse_recipe

    model = {"checkpoint": checkpoint, "dtype": dtype} | ({"revision": revision} if revision else {})
    data = {"name": name, "model": model, "device": device,
            "variants": [{"name": name, "steps": steps, "engine": engine}], "eval": evaluate or {"perplexity": None},
            "bench": bench}
    return _execute(parse_recipe(data, "command line"), "command line", out, fresh=True, show=show,
                    save_to=save_to, trust=trust)


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


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OptkitError as exc:
            _fail(exc)
        except OSError as exc:  # a path the file system refuses (too long, a file where a folder goes, no room)
            import errno

            if exc.errno not in (errno.ENAMETOOLONG, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EACCES,
                                 errno.ENOSPC, errno.EROFS):
                raise
            where = exc.filename or "a file"
            _fail(BadInput(f"cannot write {where}: {exc.strerror}; pass another path (or free the space)"))


@click.group(cls=Group)
@click.version_option(__version__, prog_name="optkit")
def main() -> None:
    """Make an LLM cheaper and faster to serve without silently making it worse."""
    quiet_libraries()


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), help="run directory (default reports/<name>)")
@click.option("--fresh", is_flag=True, help="redo every variant instead of resuming finished ones")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="override the recipe's device")
@click.option("--executor", "kind", type=click.Choice(["local", "ray"]),
              help="where variants run: one after another here (local), or spread over a Ray cluster (ray)")
@click.option("--address", help="ray: the cluster to use (host:6379, or auto); default: start Ray on this machine")
@click.option("--retries", type=click.IntRange(0, 5), help="run a variant again when its worker or node died")
@trust_options
def run(recipe: Path, out: Path | None, fresh: bool, device: str | None, kind: str | None, address: str | None,
        retries: int | None, allow_pickle: bool, trust_remote_code: bool, revision: str | None) -> None:
    """Build, evaluate and benchmark every variant of RECIPE; write report.json and report.html."""
    from optkit.recipe import ExecutorSpec, load_recipe

    r = load_recipe(recipe)
    if device:
        r.device = device
    if revision:
        r.model.revision = revision
    given = {k: v for k, v in (("kind", kind), ("address", address), ("retries", retries)) if v is not None}
    if given:
        spec = (r.executor or ExecutorSpec()).model_dump() | given
        if kind == "local" and not address:
            spec["address"] = None  # the recipe's cluster, not wanted this time
        if spec["address"] and spec["kind"] != "ray":
            raise BadInput("--address is for the ray executor; add --executor ray")
        r.executor = ExecutorSpec(**spec)
    _execute(r, str(recipe), out, fresh, base_dir=recipe.parent, trust=_trust(allow_pickle, trust_remote_code))


@main.command("plan")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="override the recipe's device")
@click.option("--remeasure", is_flag=True, help="measure memory bandwidth again instead of reusing the cached value")
@trust_options
def plan_(recipe: Path, device: str | None, remeasure: bool, allow_pickle: bool, trust_remote_code: bool,
          revision: str | None) -> None:
    """Check RECIPE and forecast each variant's batch-1 decode speed-up from the roofline; builds nothing."""
    from optkit import pipeline
    from optkit.forecast import forecast, render
    from optkit.recipe import load_recipe

    r = load_recipe(recipe)
    if device:
        r.device = device
    if revision:
        r.model.revision = revision
    p = pipeline.plan(r, str(recipe), base_dir=recipe.parent,  # the preflight: a bad recipe fails here
                      trust=_trust(allow_pickle, trust_remote_code))
    click.echo(f"{recipe}: {len(p.jobs)} variant(s) pass preflight on {p.device}")
    click.echo(render(forecast(p, remeasure)))


engine_opt = click.option("--engine", help="run the checkpoint in this engine, e.g. llamacpp for a .gguf file as "
                          "shipped (default: its format's own; a .gguf file: PyTorch)")
dtype_opt = click.option("--dtype", default="float32", type=click.Choice(["float32", "bfloat16", "float16"]),
                         help="dtype to load the checkpoint in")
device_opt = click.option("--device", default="cpu", type=click.Choice(["cpu", "cuda", "auto"]))


def _transform_command(name: str, doc: str):
    """quantize and prune are the same door: one step applied, written as a reloadable artifact."""

    @main.command(name, help=doc)
    @click.argument("checkpoint")
    @click.argument("method")
    @click.option("--param", "-p", "params", multiple=True, help="method parameter key=value (repeatable)")
    @click.option("--auto-exclude", metavar="BUDGET", help="keep the most sensitive layers in higher precision "
                  "until calibration perplexity is within BUDGET of the original, e.g. 5%")
    @dtype_opt
    @device_opt
    @click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="artifact folder to write")
    @trust_options
    def command(checkpoint: str, method: str, params: tuple[str, ...], auto_exclude: str | None, dtype: str,
                device: str, out: Path, allow_pickle: bool, trust_remote_code: bool, revision: str | None) -> None:
        from pydantic import ValidationError

        from optkit.recipe import Step

        if name == "prune" and not method.startswith("prune."):
            raise BadInput(f"optkit prune takes a pruning method (prune.magnitude, prune.2to4, prune.wanda), "
                           f"not {method!r}; use optkit quantize for that")
        try:
            step = Step(method=method, params=_params(params),
                        auto_exclude={"max_ppl_increase": auto_exclude} if auto_exclude else None)
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise BadInput(f"bad --auto-exclude {auto_exclude!r}: {msg}; write e.g. 5%") from None
        with _new_folder(out) as work:
            _single(name, checkpoint, dtype, device, [step.model_dump()], work / "run", None, None, show=False,
                    save_to=work, trust=_trust(allow_pickle, trust_remote_code), revision=revision)
            fmt = json.loads((work / "optkit.json").read_text())["format"]
        how = "replays its steps on the source checkpoint" if fmt == "replay" else f"format {fmt}"
        click.echo(f"wrote {out} ({how}); use it as a checkpoint for optkit eval / bench / run")

    return command


quantize = _transform_command("quantize", "Apply a quantization METHOD to CHECKPOINT; write a reloadable artifact "
                              "that eval, bench and recipes accept as a checkpoint.")
prune = _transform_command("prune", "Apply a pruning METHOD to CHECKPOINT (e.g. prune.wanda -p sparsity=0.5); "
                           "write a reloadable artifact.")


@main.command()
@click.argument("checkpoint")
@click.option("--format", "fmt", default="onnx", show_default=True, help="export format: a method <format>.export "
              "exists for each (onnx, gguf)")
@click.option("--opset", type=click.IntRange(min=7), help="ONNX opset (default: torch.onnx's)")
@click.option("--param", "-p", "params", multiple=True, help="export parameter key=value (repeatable), e.g. "
              "-p outtype=f16 for gguf")
@dtype_opt
@device_opt
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="folder to write (new or empty)")
@trust_options
def export(checkpoint: str, fmt: str, opset: int | None, params: tuple[str, ...], dtype: str, device: str,
           out: Path, allow_pickle: bool, trust_remote_code: bool, revision: str | None) -> None:
    """Export CHECKPOINT (to ONNX or GGUF, checked against PyTorch logits); the result is a checkpoint for eval /
    bench / run, and loads in its engine without optkit."""
    from optkit import registry

    known = sorted(n.removesuffix(".export") for n in registry.methods.names() if n.endswith(".export"))
    if fmt not in known:
        raise BadInput(f"unknown export format {fmt!r}; known: {', '.join(known)} (--format {known[0]})")
    fields = registry.methods.cls(f"{fmt}.export").Params.model_fields
    if opset and "opset" not in fields:
        raise BadInput(f"--opset is for --format onnx, not {fmt}; remove it")
    given = {"provider": device, "opset": opset}  # the options this export's parameters have
    step = {k: v for k, v in given.items() if k in fields and v is not None} | _params(params)
    with _new_folder(out) as work:
        report = _single("export", checkpoint, dtype, device, [{"method": f"{fmt}.export", "params": step}],
                         work / "run", None, None, show=False, save_to=work,
                         trust=_trust(allow_pickle, trust_remote_code), revision=revision)
    record = report.variants[0].steps[0]
    v, size = record.details["validation"], record.details["size_bytes"] / 2**20
    written = next((p for p in sorted(out.iterdir()) if p.suffix in (".onnx", ".gguf")), out)
    click.echo(f"validation ({v['prompts']}): max |logit diff| {v['max_abs_diff']:.3g} (allowed "
               f"{v['allowed_abs_diff']:.3g}), relative {v['max_rel_diff']:.3g}, top-1 agreement "
               f"{v['top1_agreement']:.1%}, cache path max |diff| {v['cache_max_abs_diff']:.3g}")
    click.echo(f"wrote {written} ({size:.1f} MiB) in {record.seconds:.0f}s; "
               f"use {out} as a checkpoint for optkit eval / bench / run")


@main.command("eval")
@click.argument("checkpoint")
@click.option("--max-tokens", default=4096, show_default=True, help="perplexity token budget")
@click.option("--text", type=click.Path(), help="a local text file instead of WikiText-2")
@click.option("--tasks", help="lm-eval tasks, comma-separated, e.g. arc_easy,hellaswag (offline with OPTKIT_DATA)")
@click.option("--limit", type=click.IntRange(min=1), help="first N documents of each task")
@engine_opt
@dtype_opt
@device_opt
@click.option("--out", "-o", type=click.Path(path_type=Path))
@trust_options
def eval_(checkpoint: str, max_tokens: int, text: str | None, tasks: str | None, limit: int | None,
          engine: str | None, dtype: str, device: str, out: Path | None, allow_pickle: bool, trust_remote_code: bool,
          revision: str | None) -> None:
    """Measure token perplexity of CHECKPOINT, and lm-eval task accuracy with --tasks."""
    ppl = {"max_tokens": max_tokens, "path": text}
    names = [t.strip() for t in (tasks or "").split(",") if t.strip()]
    if names:
        from optkit.evaluators.lm_eval import resolve

        for name in names:  # missing offline data is bad input: say so before loading any model
            resolve(name)
    specs = [{"name": n, "limit": limit} for n in names] or None
    _single("eval", checkpoint, dtype, device, [], out, {"perplexity": ppl, "tasks": specs}, None, engine=engine,
            trust=_trust(allow_pickle, trust_remote_code), revision=revision)


def _ints(option: str, text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"bad {option} {text!r}; write whole numbers separated by commas, e.g. 1,4,16") from None


@main.command()
@click.argument("checkpoint")
@click.option("--prompt-len", default=128, show_default=True, help="prompt tokens for decode and prefill")
@click.option("--prompt-lens", help="also time to first token at these prompt lengths, e.g. 32,128,512")
@click.option("--gen-len", default=64, show_default=True)
@click.option("--batch-sizes", default="1", show_default=True, help="decode throughput at each, e.g. 1,4,16")
@click.option("--repeats", default=5, show_default=True, help="least uncontended repetitions")
@click.option("--min-seconds", default=2.0, show_default=True, help="least decode time measured per batch size")
@click.option("--threads", type=click.IntRange(min=1), help="compute threads (default: the engine's own choice)")
@engine_opt
@dtype_opt
@device_opt
@click.option("--out", "-o", type=click.Path(path_type=Path))
@trust_options
def bench(checkpoint: str, prompt_len: int, prompt_lens: str | None, gen_len: int, batch_sizes: str, repeats: int,
          min_seconds: float, threads: int | None, engine: str | None, dtype: str, device: str,
          out: Path | None, allow_pickle: bool, trust_remote_code: bool, revision: str | None) -> None:
    """Benchmark CHECKPOINT: decode tokens/s per batch size, prefill latency, end-to-end latency, peak memory,
    size, energy."""
    from optkit.report.speed import bench_table

    spec = {"prompt_len": prompt_len, "gen_len": gen_len, "repeats": repeats, "min_seconds": min_seconds,
            "batch_sizes": _ints("--batch-sizes", batch_sizes), "prompt_lens": _ints("--prompt-lens", prompt_lens),
            "threads": threads}
    spec["max_repeats"] = max(repeats, 15)
    _single("bench", checkpoint, dtype, device, [], out, None, spec, show=bench_table, engine=engine,
            trust=_trust(allow_pickle, trust_remote_code), revision=revision)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="text", type=click.Choice(["text", "md", "html", "json"]))
@click.option("--vs", "versus", metavar="VARIANT",
              help="compare every variant's perplexity with this variant's instead of the baseline's (paired CI)")
def report(run_dir: Path, fmt: str, versus: str | None) -> None:
    """Print a finished run's report (text table, markdown for PR comments, html, json)."""
    from optkit.report.html import render_html
    from optkit.report.summary import markdown, text_table
    from optkit.report.summary import versus as versus_table
    from optkit.results import read_report

    rep = read_report(run_dir)
    if versus is not None:
        if fmt != "text":
            raise BadInput(f"--vs prints a text table, not {fmt}; drop --format {fmt}")
        click.echo(versus_table(rep, versus))
        return
    render = {"text": text_table, "md": markdown, "html": render_html,
              "json": lambda r: r.model_dump_json(indent=2)}[fmt]
    click.echo(render(rep))


@main.command()
@click.argument("report_path", metavar="REPORT", type=click.Path(path_type=Path))
@click.option("--max-ppl-increase", help="largest allowed perplexity increase vs the baseline, e.g. 5%")
@click.option("--min-speedup", type=float, help="smallest allowed decode speed-up vs the baseline, e.g. 1.2")
@click.option("--max-acc-drop", help="largest absolute drop of any task accuracy, e.g. 2% (= 0.02)")
@click.option("--min-recovery", type=float, help="task accuracy as a share of the baseline's, e.g. 0.98")
@click.option("--max-size-mb", type=float, help="largest size on disk")
@click.option("--max-memory-mb", type=float, help="largest peak memory during the benchmark")
@click.option("--max-prefill-ms", type=float, help="longest time to first token (batch 1)")
@click.option("--max-kl", type=float, help="largest mean KL(baseline || variant) of next-token distributions, nats")
@click.option("--min-top1-agreement", type=float, help="smallest top-1 agreement with the baseline, e.g. 0.9")
@click.option("--variant", "variants", multiple=True, help="gate only these variants (repeatable)")
@click.option("--against", type=click.Path(path_type=Path),
              help="an older report: compare each variant with its namesake there (regression gate)")
@click.option("--strict", is_flag=True, help="gate on point estimates instead of confidence intervals / spread")
def gate(report_path: Path, variants: tuple[str, ...], against: Path | None, strict: bool, **rules) -> None:
    """Exit 0 when every gated variant passes, 1 otherwise (2 on bad input).

    By default an accuracy rule fails only when the paired 95% confidence interval of the perplexity change
    lies beyond the allowed increase, and a speed rule only when the p10/p90 timing spread cannot reach it;
    --strict gates on point estimates."""
    from pydantic import ValidationError

    from optkit.gate import describe, evaluate, regression_spec
    from optkit.recipe import GateSpec
    from optkit.results import read_report

    rep = read_report(report_path)
    old = read_report(against) if against else None
    given = {k: v for k, v in rules.items() if v is not None}
    if not given and old is not None:  # a regression gate: the recipe's baseline-relative gates do not apply
        spec, origin = regression_spec(rep, old), f"no regression beyond noise vs {against}"
    elif not given:
        spec, origin = GateSpec.model_validate(rep.recipe.get("gates") or {}), "the recipe's gates"
    else:
        try:
            spec, origin = GateSpec(**given), "the options given"
        except ValidationError as exc:
            raise BadInput(f"bad gate option: {exc.errors()[0]['msg']}; write e.g. --max-ppl-increase 5%") from None
    if variants:
        spec.variants = list(variants)
    click.echo(f"rules ({origin}): {describe(spec, strict)}")
    verdicts = evaluate(rep, spec, strict=strict, against=old)
    for v in verdicts:
        click.echo(v.line())
    failed = [v.variant for v in verdicts if not v.passed]
    click.echo(f"gate: {'FAILED: ' + ', '.join(failed) if failed else 'passed'}")
    sys.exit(1 if failed else 0)


@main.command()
def schema() -> None:
    """Print the JSON Schema of report.json."""
    from optkit.results import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@main.command()
def methods() -> None:
    """List the methods recipes can name."""
    from optkit import registry

    for name in registry.names():
        click.echo(name)
