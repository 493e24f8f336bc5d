"""Result reuse keyed by content: a rerun keeps a finished variant only when its recipe entry, source, evaluation
and benchmark settings, data files and versions are all unchanged, recomputes the variant whose input changed
(the progress line says which), and recomputes results an older optkit wrote without a key."""

from __future__ import annotations

import json
import shutil

import pytest

RECIPE = """\
name: reuse
model: {{checkpoint: {model}}}
variants:
  - name: base
  - name: pruned
    steps: [{{method: prune.magnitude, params: {{sparsity: {sparsity}}}}}]
eval:
  perplexity: {{path: {text}, max_tokens: {tokens}, window: 32, stride: 16}}
  fidelity: null
bench: {bench}
"""


def stamped(tmp_path, model, text, sparsity=0.5, tokens=64, bench="null"):
    from optkit import pipeline, reuse
    from optkit.recipe import parse_text

    recipe = parse_text(RECIPE.format(model=model, text=text, sparsity=sparsity, tokens=tokens, bench=bench))
    return {j.variant.name: reuse.stamp(j) for j in pipeline.plan(recipe, "r.yaml").jobs}


def result(job, status="ok"):
    from optkit.results import VariantResult

    return VariantResult(name=job.variant.name, status=status, key=job.key, key_parts=job.key_parts)


def test_each_changed_input_is_named_and_only_its_variants_recompute(tmp_path, tiny_model, text_file, monkeypatch):
    from optkit import reuse

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    text = tmp_path / "text.txt"
    text.write_text(text_file.read_text())
    before = stamped(tmp_path, model, text)
    done = {name: result(job) for name, job in before.items()}
    assert all(job.key for job in before.values())
    same = stamped(tmp_path, model, text)
    assert {n: reuse.why_not(done[n], j) for n, j in same.items()} == {"base": None, "pruned": None}

    def why(**changes):
        return {n: reuse.why_not(done[n], j) for n, j in stamped(tmp_path, model, text, **changes).items()}

    assert why(sparsity=0.7) == {"base": None, "pruned": "recipe entry changed"}
    assert why(tokens=96) == {"base": "eval settings changed", "pruned": "eval settings changed"}
    assert why(bench="{prompt_len: 8}") == {"base": "bench settings changed", "pruned": "bench settings changed"}
    timed = {n: result(j) for n, j in stamped(tmp_path, model, text, bench="{prompt_len: 8}").items()}
    swept = stamped(tmp_path, model, text, bench="{prompt_len: 8, serving: {concurrency: [1, 4]}}")
    assert {n: reuse.why_not(timed[n], j) for n, j in swept.items()} == {"base": "bench settings changed",
                                                                          "pruned": "bench settings changed"}
    text.write_text(text.read_text() + "One more sentence.\n")
    assert set(why().values()) == {"data files changed"}
    text.write_text(text_file.read_text())
    (model / "README.md").write_text("a file more: other contents\n")
    assert set(why().values()) == {"source changed"}
    (model / "README.md").unlink()
    monkeypatch.setattr(reuse, "_versions", lambda: {"optkit": "9.9"})
    assert set(why().values()) == {"optkit or library versions changed"}
    monkeypatch.undo()
    old = done["base"].model_copy(update={"key": None, "key_parts": {}})
    assert "no content key" in reuse.why_not(old, before["base"])
    assert "failed last time" in reuse.why_not(result(before["base"], "failed"), before["base"])


def test_a_changed_sparsity_is_recomputed_not_kept(tmp_path, tiny_model, text_file):
    """Change a sparsity from 0.5 to 0.7 and rerun without --fresh: the report shows the new numbers."""
    from optkit import pipeline
    from optkit.recipe import parse_text

    out, said = tmp_path / "run", []

    def run(sparsity):
        said.clear()
        recipe = parse_text(RECIPE.format(model=tiny_model, text=text_file, sparsity=sparsity, tokens=64,
                                          bench="null"))
        return pipeline.run(pipeline.plan(recipe, "r.yaml"), out, say=said.append)

    first = run(0.5)
    base_stamp = (out / "variants" / "base.json").stat().st_mtime_ns
    second = run(0.7)
    assert any("base: already done" in s for s in said), said
    assert any("pruned: computing again: recipe entry changed" in s for s in said), said
    assert (out / "variants" / "base.json").stat().st_mtime_ns == base_stamp
    pruned = {v.name: v for v in second.variants}["pruned"]
    assert pruned.steps[0].params["sparsity"] == 0.7
    old = {v.name: v for v in first.variants}["pruned"]
    assert pruned.accuracy[0].value != old.accuracy[0].value
    saved = json.loads((out / "report.json").read_text())
    assert saved["variants"][1]["steps"][0]["params"]["sparsity"] == 0.7
    assert saved["source"]["sha256"] and saved["variants"][0]["key"]


@pytest.mark.parametrize("content", ["[]", "{}", '{"name": 3}', "null", '"x"', "[[[[[[[[[[]]]]]]]]]]", "{\"name\""])
def test_a_damaged_result_in_the_run_folder_is_recomputed_not_a_traceback(tmp_path, content):
    from optkit.reuse import previous

    path = tmp_path / "v.json"
    path.write_text(content)
    assert previous(path) is None
