"""The command line: a thin layer over the Python API (api.py). Each command parses its options, calls one API
function and prints; the API (imported inside commands, so --help stays fast) builds the recipe and runs the
one pipeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import yaml

from optkit.errors import BadInput, OptkitError, quiet_libraries
from optkit.version import __version__


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


def _say(text: str) -> None:
    click.echo(text, err=True)


def _live() -> bool:
    """Redraw a line per variant in place: only on a terminal (CI logs get one plain line per phase)."""
    return sys.stderr.isatty()


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


def _trust(allow_pickle: bool, trust_remote_code: bool):
    from optkit.trust import Trust

    return Trust(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)


def _sigterm_exits() -> None:
    """SIGTERM (a CI cancel, `timeout`) unwinds like Ctrl-C: the worker's process group is killed, the run folder's
    lock released, instead of the orchestrator vanishing mid-write."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _printed(report, run_dir: Path, show) -> None:
    """The report as the command prints it, where it was written, then exit 3 if a variant failed."""
    from optkit import api

    click.echo(show(report))
    click.echo(f"\nwrote {run_dir / 'report.json'} and {run_dir / 'report.html'}")
    api.check_failed(report, run_dir)


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
    _sigterm_exits()


def workload_opts(command):
    """--workload, --objective, --concurrency: the traffic to rank for, over the recipe's workload: section."""
    for option in reversed([
            click.option("--workload", "points", metavar="P/O[:W],...", help="prompt/output tokens per request, "
                         "weighted, e.g. 2000/100 or 200/200:3,2000/100:1 (default: the benchmark's shape)"),
            click.option("--objective", type=click.Choice(["decode", "latency", "ttft", "throughput"]),
                         help="what to rank by (default decode tokens/s)"),
            click.option("--concurrency", type=click.IntRange(min=1), help="requests served together")]):
        command = option(command)
    return command


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), help="run directory (default reports/<name>)")
@click.option("--fresh", is_flag=True, help="redo every variant instead of resuming finished ones")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="override the recipe's device")
@click.option("--executor", "kind", type=click.Choice(["local", "ray"]),
              help="where variants run: one after another here (local), or spread over a Ray cluster (ray)")
@click.option("--address", help="ray: the cluster to use (host:6379, or auto); default: start Ray on this machine")
@click.option("--retries", type=click.IntRange(0, 5), help="run a variant again when its worker or node died")
@workload_opts
@trust_options
def run(recipe: Path, out: Path | None, fresh: bool, device: str | None, kind: str | None, address: str | None,
        retries: int | None, points: str | None, objective: str | None, concurrency: int | None, allow_pickle: bool,
        trust_remote_code: bool, revision: str | None) -> None:
    """Build, evaluate and benchmark every variant of RECIPE; write report.json and report.html."""
    from optkit import api
    from optkit.recipe import load_recipe
    from optkit.report.summary import text_table

    given = {k: v for k, v in (("kind", kind), ("address", address), ("retries", retries)) if v is not None}
    report = api.run(recipe, out, fresh=fresh, device=device, executor=given, say=_say, live=_live(),
                     allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, revision=revision,
                     workload=points, objective=objective, concurrency=concurrency)
    _printed(report, api.out_dir(load_recipe(recipe).name, out), text_table)


@main.command()
@click.argument("source")
@click.option("--budget", help="perplexity budget against SOURCE as it is, e.g. 5% (default 5%)")
@click.option("--time", "minutes", type=float, help="time budget in minutes (default 30)")
@workload_opts
@click.option("--executor", "kind", type=click.Choice(["local", "ray"]), help="where candidates run")
@click.option("--address", help="ray: the cluster to use (host:6379, or auto)")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="search folder (default reports/<name>)")
@trust_options
def search(source: str, budget: str | None, minutes: float | None, points: str | None, objective: str | None,
           concurrency: int | None, kind: str | None, address: str | None, out: Path | None, allow_pickle: bool,
           trust_remote_code: bool, revision: str | None) -> None:
    """Find the fastest variant of SOURCE (a checkpoint, or a recipe with a search: section) within an accuracy and
    a time budget: llama.cpp's types and per-tensor mixes, screened cheaply first; resumes when run again."""
    from optkit import api
    from optkit.report.search import search_lines
    from optkit.report.summary import text_table

    given = {k: v for k, v in (("kind", kind or ("ray" if address else None)), ("address", address)) if v}
    report = api.search(source, out, budget=budget, minutes=minutes, workload=points, objective=objective,
                        concurrency=concurrency, executor=given, say=_say, allow_pickle=allow_pickle,
                        trust_remote_code=trust_remote_code, revision=revision)
    click.echo(text_table(report) + "\n\n" + "\n".join(search_lines(report.search)))
    folder = api.search_folder(source, out)
    click.echo(f"\nwrote {folder / 'report.json'} and {folder / 'report.html'}")


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
        from optkit import api

        call = api.prune if name == "prune" else api.quantize
        call(checkpoint, method, out, params=_params(params), auto_exclude=auto_exclude, dtype=dtype, device=device,
             say=_say, live=_live(), allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
             revision=revision)
        fmt = json.loads((out / "optkit.json").read_text())["format"]
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
    from optkit import api

    report = api.export(checkpoint, out, format=fmt, opset=opset, params=_params(params), dtype=dtype, device=device,
                        say=_say, live=_live(), allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                        revision=revision)
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
    from optkit import api
    from optkit.report.summary import text_table

    report = api.evaluate(checkpoint, out=out, max_tokens=max_tokens, text=text, tasks=tasks, limit=limit,
                          engine=engine, dtype=dtype, device=device, say=_say, live=_live(),
                          allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, revision=revision)
    _printed(report, api.out_dir("eval", out), text_table)


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
@click.option("--serving", help="then an online serving sweep at these concurrencies, 32 requests each, through "
              "the engine's server (vLLM), e.g. 1,4,16")
@engine_opt
@dtype_opt
@device_opt
@click.option("--out", "-o", type=click.Path(path_type=Path))
@trust_options
def bench(checkpoint: str, prompt_len: int, prompt_lens: str | None, gen_len: int, batch_sizes: str, repeats: int,
          min_seconds: float, threads: int | None, serving: str | None, engine: str | None, dtype: str, device: str,
          out: Path | None, allow_pickle: bool, trust_remote_code: bool, revision: str | None) -> None:
    """Benchmark CHECKPOINT: decode tokens/s per batch size, prefill latency, end-to-end latency, peak memory,
    size, energy."""
    from optkit import api
    from optkit.report.speed import bench_table

    report = api.bench(checkpoint, out=out, prompt_len=prompt_len, prompt_lens=_ints("--prompt-lens", prompt_lens),
                       gen_len=gen_len, batch_sizes=_ints("--batch-sizes", batch_sizes), repeats=repeats,
                       min_seconds=min_seconds, threads=threads, engine=engine, dtype=dtype, device=device, say=_say,
                       live=_live(), allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, revision=revision,
                       serving=_ints("--serving", serving))
    _printed(report, api.out_dir("bench", out), bench_table)


@main.command()
def methods() -> None:
    """List the methods recipes can name."""
    from optkit import registry

    for name in registry.names():
        click.echo(name)


from optkit.cli_report import gate, report, schema  # noqa: E402 - commands on a finished run, in their own module

for command in (report, gate, schema):
    main.add_command(command)
