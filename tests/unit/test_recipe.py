"""The recipe loader: every shipped recipe validates; every bad input gets one line naming file, line, field, fix."""

from pathlib import Path

import pytest

from optkit.errors import BadInput
from optkit.recipe import load_recipe, parse_fraction
from tests.conftest import ROOT, optkit_cli

GOOD = """\
name: t
model:
  checkpoint: some/model
variants:
  - name: a
  - name: b
    steps:
      - method: cast
        params: {dtype: bfloat16}
"""


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.variants and recipe.baseline in [v.name for v in recipe.variants]


def test_defaults_baseline_to_first_variant(tmp_path):
    (tmp_path / "r.yaml").write_text(GOOD)
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.baseline == "a"
    assert recipe.eval.perplexity.window == 512


@pytest.mark.parametrize("text, expected", [
    (GOOD.replace("  checkpoint: some/model", "  checkpoint: some/model\n  dtpye: float32"),
     ["r.yaml:4", "model.dtpye", "did you mean 'dtype'"]),
    (GOOD.replace("name: t\n", ""), ["r.yaml:1", "name", "missing"]),
    (GOOD.replace("{dtype: bfloat16}", "{dtype: bfloat16}\n        colour: red"),
     ["r.yaml:10", "variants.1.steps.0.colour", "unknown key"]),
    (GOOD + "bench:\n  repeats: many\n", ["r.yaml:11", "bench.repeats", "integer"]),
    (GOOD + "bench:\n  serving: {concurrency: [4, 0]}\n", ["r.yaml:11", "bench.serving.concurrency",
                                                          "at least 1"]),
    (GOOD + "baseline: zzz\n", ["baseline 'zzz' is not a variant"]),
    (GOOD.replace("name: b", "name: a"), ["repeated: a"]),
    (GOOD.replace("name: b", "name: 'b c'"), ["r.yaml:6", "variants.1.name"]),
    ("name: [unclosed\n", ["r.yaml:", "not valid YAML"]),
    ("- just\n- a list\n", ["must be a YAML mapping"]),
])
def test_bad_recipes_name_file_line_field(tmp_path, text, expected):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(BadInput) as info:
        load_recipe(path)
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


def test_missing_recipe_file():
    with pytest.raises(BadInput, match="recipe file not found"):
        load_recipe(Path("/nonexistent/recipe.yaml"))


def test_fraction_parsing():
    assert parse_fraction("5%") == pytest.approx(0.05)
    assert parse_fraction(0.05) == pytest.approx(0.05)
    assert parse_fraction("0.1") == pytest.approx(0.1)


def test_cli_bad_recipe_exits_2_with_one_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD.replace("variants:", "variantz:"))
    result = optkit_cli("run", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0]
    assert "unknown key 'variantz'; did you mean 'variants'" in lines[0]


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from optkit.cli import main; import optkit.pipeline; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
