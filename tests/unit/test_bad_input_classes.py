"""Each class of bad input the review found ending in a traceback, through the command line: exit 2 and one line
naming the file, the field and the fix. (Damaged cache files are fuzzed in test_fuzz_cache.py, GGUF headers in
test_fuzz_header.py; here one case of each goes through the CLI.)"""

from __future__ import annotations

import json
import shutil
import struct

import pytest

RECIPE = """\
name: bad
model: {{checkpoint: {model}}}
variants: [{{name: base}}]
eval: {{perplexity: {{path: {text}, max_tokens: 32}}, fidelity: null}}
bench: null
{extra}"""


def cli(*args):
    from click.testing import CliRunner

    from optkit.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, *needles) -> str:
    assert result.exit_code == 2, result.output[-2000:]
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("optkit: error")]
    assert "Traceback" not in result.output and "; " in line, line  # one line, with its fix after the semicolon
    for needle in needles:
        assert needle in line, line
    return line


def recipe(tmp_path, tiny_model, text_file, extra="", model=None):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(model=model or tiny_model, text=text_file, extra=extra))
    return path


@pytest.mark.parametrize("extra, field, fix", [
    ("gates: {max_ppl_increase: [1, 2]}\n", "gates.max_ppl_increase", "a percentage like '5%'"),
    ("gates: {max_acc_drop: null, min_speedup: [1.2]}\n", "gates.min_speedup", "write a single value"),
    ("gates: {max_ppl_increase: .nan}\n", "gates.max_ppl_increase", "finite"),
    ("x-anchor: &a {k: 1}\n", "x-anchor", "remove it"),
])
def test_thresholds_that_are_not_numbers(tmp_path, tiny_model, text_file, extra, field, fix):
    path = recipe(tmp_path, tiny_model, text_file, extra)
    refused(cli("plan", path), f"{path}:", field, fix)


def test_auto_exclude_budget_that_is_a_list_or_null(tmp_path, tiny_model, text_file):
    for budget in ("[5%]", "null"):
        text = RECIPE.format(model=tiny_model, text=text_file, extra="").replace(
            "variants: [{name: base}]", "variants: [{name: base}, {name: q, steps: [{method: torchao.int8_weight_only,"
            f" auto_exclude: {{max_ppl_increase: {budget}}}}}]}}]")
        path = tmp_path / "r.yaml"
        path.write_text(text)
        refused(cli("plan", path), f"{path}:3", "variants.1.steps.0.auto_exclude.max_ppl_increase", "'5%'")


def test_yaml_aliases_where_a_scalar_is_expected_and_alias_bombs(tmp_path, tiny_model, text_file):
    base = RECIPE.format(model=tiny_model, text=text_file, extra="")
    cases = {
        base.replace("variants: [{name: base}]", "variants: &v [{name: base}]\nbaseline: *v"):
            ("baseline", "not a list (a YAML alias *name stands for"),
        base.replace("model: {", "model: &m {").replace("variants: [{name: base}]", "variants: [{name: *m}]"):
            ("variants.0.name", "not a mapping"),
        base.replace("variants: [{name: base}]", "variants: &v [{name: base, steps: *v}]"):
            ("r.yaml:3", "recursive anchor"),
        base.replace("bench: null", "bench: null\nx: &a [1,1,1,1,1,1,1,1,1,1]\ny: &b [" + ",".join(["*a"] * 10)
                     + "]\nz: &c [" + ",".join(["*b"] * 10) + "]\nw: [" + ",".join(["*c"] * 21) + "]"):
            ("r.yaml:", "expands to more than 20,000 values through YAML aliases"),
    }
    for text, needles in cases.items():
        path = tmp_path / "r.yaml"
        path.write_text(text)
        refused(cli("plan", path), str(path), *needles)


def test_a_model_with_non_finite_weights(tmp_path, tiny_model, text_file):
    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan-model"
    shutil.copytree(tiny_model, folder)
    weights = load_file(folder / "model.safetensors")
    name = sorted(k for k in weights if k.endswith("mlp.up_proj.weight"))[0]
    weights[name][0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    for args in (("eval", folder, "--text", text_file, "-o", tmp_path / "ev"),
                 ("plan", recipe(tmp_path, tiny_model, text_file, model=folder))):
        refused(cli(*args), str(folder / "model.safetensors"), f"tensor {name} holds 3 NaN or infinite values",
                "re-download or re-save")
    assert not (tmp_path / "ev" / "variants").exists()


def test_an_output_path_that_is_an_existing_file(tmp_path, tiny_model, text_file):
    existing = tmp_path / "taken"
    existing.write_text("a file")
    refused(cli("eval", tiny_model, "--text", text_file, "-o", existing), str(existing), "existing file")
    refused(cli("bench", tiny_model, "-o", existing), str(existing), "existing file")
    refused(cli("run", recipe(tmp_path, tiny_model, text_file), "-o", existing), str(existing), "existing file")
    refused(cli("quantize", tiny_model, "cast", "-p", "dtype=bfloat16", "-o", existing), str(existing),
            "already exists")
    assert existing.read_text() == "a file"


def test_names_at_the_file_systems_length_limits(tmp_path, tiny_model, text_file):
    long = "v" * 101
    path = recipe(tmp_path, tiny_model, text_file).read_text().replace("{name: base}", f"{{name: {long}}}")
    (tmp_path / "r.yaml").write_text(path)
    refused(cli("run", tmp_path / "r.yaml"), "variants.0.name", "at most 100 characters")
    refused(cli("eval", tiny_model, "--text", text_file, "-o", tmp_path / ("o" * 300)), "too long", "another --out")
    ok = recipe(tmp_path, tiny_model, text_file).read_text().replace("{name: base}", "{name: " + "v" * 100 + "}")
    (tmp_path / "r.yaml").write_text(ok)
    assert cli("plan", tmp_path / "r.yaml").exit_code == 0  # the longest name allowed still plans


@pytest.mark.parametrize("config, needles", [
    ({"model_type": "no-such-arch"}, ("config.json", "no-such-arch", "check model_type")),
    ("{ not json", ("config.json", "transformers cannot read it")),
    ({"model_type": "llama", "hidden_size": "wide"}, ("config.json", "transformers cannot read it")),
])
def test_configs_transformers_cannot_read(tmp_path, tiny_model, text_file, config, needles):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    if isinstance(config, dict) and config.get("model_type") == "llama":
        config = {**json.loads((folder / "config.json").read_text()), **config}
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    refused(cli("plan", recipe(tmp_path, tiny_model, text_file, model=folder)), *needles)


def test_a_gguf_header_field_out_of_range(tmp_path, text_file):
    pytest.importorskip("gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 17) + b"general.alignment"
                    + struct.pack("<II", 4, 0))
    refused(cli("eval", bad, "--text", text_file), str(bad), "general.alignment is 0, not a positive power of two",
            "convert it again")
    bad.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**60, 0))
    refused(cli("eval", bad, "--text", text_file), str(bad), "the tensor count", "does not fit")


def test_a_report_of_the_wrong_shape(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"variants": [1, 2]}))
    refused(cli("report", tmp_path), str(tmp_path / "report.json"), "regenerate it")
    (tmp_path / "report.json").write_text("[" * 100_000)
    refused(cli("report", tmp_path), str(tmp_path / "report.json"), "regenerate it")
