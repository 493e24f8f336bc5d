"""The commands that read a finished run's report.json: `optkit report` (print it as text, markdown, html or json),
`optkit gate` (the CI verdict) and `optkit schema` (report.json's JSON Schema). cli.py adds them to its group."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from optkit.errors import BadInput


@click.command()
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


@click.command()
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
    from optkit import api
    from optkit.gate import describe
    from optkit.results import read_report

    rep = read_report(report_path)
    old = read_report(against) if against else None
    spec, origin = api.gate_rules(rep, rules, old)
    if origin.startswith("no regression"):
        origin = f"no regression beyond noise vs {against}"
    if variants:
        spec.variants = list(variants)
    click.echo(f"rules ({origin}): {describe(spec, strict)}")
    verdicts = api.gate(rep, spec, strict=strict, against=old)
    for v in verdicts:
        click.echo(v.line())
    failed = [v.variant for v in verdicts if not v.passed]
    click.echo(f"gate: {'FAILED: ' + ', '.join(failed) if failed else 'passed'}")
    sys.exit(1 if failed else 0)


@click.command()
def schema() -> None:
    """Print the JSON Schema of report.json."""
    from optkit.results import json_schema

    click.echo(json.dumps(json_schema(), indent=2))
