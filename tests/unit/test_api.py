"""The Python API: README's example runs as written (a tiny model as its checkpoint), the API and the CLI write the
same report.json for one recipe, `import optkit` loads no library, and the API's errors are the CLI's."""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, optkit_cli


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- tests/unit/test_api.py runs this block[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its API example (or the marker line above it)"
    return match.group(1)


# the tests check what the API writes, not speeds: the shortest benchmark instead of README's
QUICK_BENCH = ('"bench": {"gen_len": 4, "warmup": 0, "repeats": 2, "max_repeats": 2, "min_seconds": 0, '
               '"paired_rounds": 2}')


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, tiny_model):
    """README's example in a fresh interpreter, in a folder of its own, reusing no earlier result: (its folder, its
    stdout)."""
    folder = tmp_path_factory.mktemp("api")
    code = readme_example()
    assert code.count('"smollm2-135m"') == 1 and code.count('"bench": {') == 1
    code = code.replace('"smollm2-135m"', repr(str(tiny_model)))
    code = re.sub(r'"bench": \{[^}]*\}', QUICK_BENCH, code)
    run = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OPTKIT_NO_CACHE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    return folder, run.stdout


def test_readme_example_runs(api_run):
    folder, out = api_run
    lines = out.splitlines()
    report = json.loads((folder / "reports" / "api-demo" / "report.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["fp32", "bf16"]
    assert all(v["status"] == "ok" for v in report["variants"])
    assert (folder / "reports" / "api-demo" / "report.html").is_file()
    assert lines[0].startswith(("Ship bf16:", "Keep the baseline (fp32)"))  # the recommendation's sentence
    assert set(eval(lines[1])) <= {"fp32", "bf16"} and eval(lines[1])  # the frontier, never empty
    assert re.fullmatch(r"(PASS|FAIL) bf16: .*perplexity.*", lines[2])  # one verdict: the non-baseline variant


def _comparable(report: dict) -> dict:
    """report.json without what differs between two runs of one recipe: when it ran, how long things took, and
    the timings (their structure stays: the same fields are measured)."""
    def shape(value):
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(v) for v in value[:1]]
        # a reason that is there only when the machine was busy: optional either way
        return "str|None" if value is None or isinstance(value, str) else type(value).__name__

    # "duels" too: which variants are timed head to head follows from the measured speed-ups (report/decide.py)
    out = {k: v for k, v in report.items() if k not in ("created", "run", "duels")}
    for v in out["variants"]:
        del v["seconds"], v["timeline"]
        for step in v["steps"]:
            del step["seconds"]
        v["warnings"] = [w for w in v["warnings"] if "timing is noisy" not in w]
        bench = v["bench"]
        v["bench"] = {"size_mb": bench["size_mb"], "prompt_len": bench["prompt_len"], "shape": shape(bench)}
    return out


def _differences(a, b, path="") -> list[str]:
    """The paths at which two JSON values differ, with both sides: a readable failure, not pytest's truncated dict."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k, "<missing>"), b.get(k, "<missing>"),
                                                                         f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_api_and_cli_write_the_same_report(api_run, tmp_path):
    folder, _ = api_run
    api = json.loads((folder / "reports" / "api-demo" / "report.json").read_text())
    recipe = tmp_path / "api-demo.yaml"
    recipe.write_text(yaml.safe_dump(api["recipe"]))  # the recipe as the API ran it, every default filled in
    # the same relative --out from a folder outside any git checkout, as the example ran: the same paths inside
    result = optkit_cli("run", str(recipe), "--out", "reports/api-demo", cwd=tmp_path, env={"OPTKIT_NO_CACHE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    cli = json.loads((tmp_path / "reports" / "api-demo" / "report.json").read_text())
    differences = _differences(_comparable(cli), _comparable(api))
    assert differences == [], "\n".join(differences)
    assert cli["variants"][1]["accuracy"][0]["value"] == api["variants"][1]["accuracy"][0]["value"]  # bit for bit


def test_import_optkit_loads_no_library():
    code = ("import sys, optkit\n"
            "loaded = sorted(m for m in ('pydantic', 'torch', 'transformers', 'click', 'yaml') if m in sys.modules)\n"
            "print(loaded, callable(optkit.gate), callable(optkit.bench))\n"
            "import optkit.gate, optkit.bench\n"  # the modules of the same names: the attributes stay the functions
            "print(optkit.gate.__module__, optkit.bench.__module__, sys.modules['optkit.gate'].__name__)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.splitlines() == ["[] True True", "optkit.api optkit.api optkit.gate"], run.stderr


def test_api_refuses_bad_input_as_the_cli_does(tmp_path, tiny_model):
    import optkit
    from optkit.errors import BadInput

    with pytest.raises(BadInput, match="recipe file not found"):
        optkit.run(tmp_path / "missing.yaml")
    with pytest.raises(BadInput, match="variants"):
        optkit.run({"name": "r", "model": {"checkpoint": str(tiny_model)}, "variants": []})
    with pytest.raises(BadInput, match="--address is for the ray executor"):
        optkit.run({"name": "r", "model": {"checkpoint": str(tiny_model)}, "variants": [{"name": "a"}]},
                   out=tmp_path / "run", executor={"address": "127.0.0.1:9"})
    with pytest.raises(BadInput, match="optkit prune takes a pruning method"):
        optkit.prune(tiny_model, "cast", tmp_path / "out")
    with pytest.raises(BadInput, match="unknown export format 'tflite'"):
        optkit.export(tiny_model, tmp_path / "out", format="tflite")
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()
    result = optkit_cli("export", str(tiny_model), "--format", "tflite", "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and "unknown export format 'tflite'" in result.stderr


def test_gate_takes_rules_as_a_dict_or_the_recipes(api_run):
    import optkit

    folder, _ = api_run
    report = optkit.Report.load(folder / "reports" / "api-demo")
    strict = optkit.gate(report, {"max_ppl_increase": 0.0}, strict=True)
    ppl = {v.name: v.accuracy[0].value for v in report.variants}
    assert [(v.variant, v.passed) for v in strict] == [("bf16", ppl["bf16"] <= ppl["fp32"])]
    with pytest.raises(Exception, match="no gate rules"):  # the recipe has no gates: section
        optkit.gate(report)
    rules, origin = optkit.gate_rules(report, {"min_speedup": 1.2})
    assert rules.min_speedup == 1.2 and origin == "the options given"
    assert report.recommendation.variant in ("fp32", "bf16") and str(report.recommendation).startswith(
        ("Ship", "Keep"))
    assert {v.name for v in report.frontier()} <= {"fp32", "bf16"}
