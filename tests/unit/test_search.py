"""optkit search on tiny GGUF files: the sensitivity job against a KL computed the plain way, on two families;
the whole search end to end (every candidate with the stage it left at and why, the plot and the sensitivity table
in report.html, the chosen file loading in llama.cpp without optkit, a rerun resuming everything); bad input."""

import math

import pytest
import torch

pytest.importorskip("llama_cpp")

from optkit import checkpoints  # noqa: E402
from optkit.calibration import CalibrationSpec  # noqa: E402
from optkit.gguf_header import read  # noqa: E402
from optkit.job import VariantJob  # noqa: E402
from optkit.recipe import ModelSpec, Variant, parse_text  # noqa: E402
from optkit.results import VariantResult  # noqa: E402
from optkit.search.sensitivity import groups, members, quantize_params  # noqa: E402
from optkit.searchspec import SensitivitySpec  # noqa: E402
from tests.conftest import optkit_cli  # noqa: E402


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_sensitivity_job_matches_a_plain_kl(tiny_gguf, text_file, family):
    from optkit.engines.method import apply_steps
    from optkit.recipe import Step
    from optkit.search.sensitivity import run_sensitivity_job

    _, path, _ = tiny_gguf(family)
    header = read(path)
    calib = CalibrationSpec(samples=2, seq_len=32, path=str(text_file))
    spec = SensitivitySpec(low="Q4_0", groups=groups(header.tensor_types, 1), keep_type="Q8_0", calibration=calib,
                           uniform=["Q8_0"])
    job = VariantJob(variant=Variant(name="s", engine="llamacpp"), checkpoint=checkpoints.resolve(str(path)),
                     model=ModelSpec(checkpoint=str(path)), device="cpu", sensitivity=spec)
    cand = VariantResult(name="s", status="ok")
    run_sensitivity_job(job, cand)
    sens = cand.sensitivity
    matrices = [n for n in header.tensor_types if "norm" not in n]
    assert sum(g.weights for g in sens.groups) == sum(header.sizes[n] for n in matrices)
    assert sens.tokens == 64 and all(g.kl >= 0 for g in sens.groups) and max(g.kl for g in sens.groups) > 0
    # a float source's mixes keep Q8_0: moving all of it to Q4_0 was timed against it, each group gets its share
    assert list(sens.type_ms_saved) == ["Q8_0"] and sens.source_ms > 0 and sens.keep_type == "Q8_0"
    assert list(sens.uniform_speedup) == ["Q8_0"] and sens.uniform_speedup["Q8_0"] > 0  # the whole file, timed
    assert all(g.ms_saved == pytest.approx(sens.type_ms_saved["Q8_0"] * g.weights / sum(x.weights for x in
               sens.groups)) for g in sens.groups)
    worst = max(sens.groups, key=lambda g: g.kl)
    # kept in Q8_0 (34 bytes per 32 weights) or moved to Q4_0 (18 per 32): 0.5 bytes per weight saved
    assert worst.bytes_saved == sum(header.sizes[n] for n in members(worst.pattern, header.tensor_types)) // 2
    # the same group quantized through the method, KL written out from its definition on the same windows
    from optkit import loading
    from optkit.calibration import calibration_batch

    lm = loading.load(job.checkpoint, engine="llamacpp")
    q, _ = apply_steps(lm, [Step(method="gguf.quantize", params=quantize_params("Q4_0", [worst.pattern], "Q8_0",
                                                                                False, None))])
    assert read(q.path).tensor_types[members(worst.pattern, header.tensor_types)[0]] == "Q4_0"
    kls = []
    for w in calibration_batch(lm, calib):
        p = torch.log_softmax(lm.logits(w[None])[0][0].double(), -1)
        r = torch.log_softmax(q.logits(w[None])[0][0].double(), -1)
        kls.append(float(torch.nn.functional.kl_div(r, p, log_target=True, reduction="none").sum(-1).mean()))
    assert worst.kl == pytest.approx(sum(kls) / len(kls), rel=1e-3, abs=1e-7)


SEARCH = """\
name: tiny-search
model: {{checkpoint: {path}}}
variants: [{{name: source}}]
eval: {{perplexity: {{path: {text}}}}}
bench: {{prompt_len: 16, gen_len: 8, warmup: 0, repeats: 2, max_repeats: 3, min_seconds: 0, paired_rounds: 2,
        threads: 1}}
search:
  max_ppl_increase: 50%
  types: [Q4_0]
  imatrix_types: []
  mixes: {{blocks: 1, points: 1, imatrix: false}}
  calibration: {{samples: 2, seq_len: 32, path: {text}}}
  screen_tokens: 64
  ppl_tokens: 256
  max_benchmarked: 1
"""


def test_search_end_to_end_and_resume(tiny_gguf, text_file, tmp_path):
    _, path, _ = tiny_gguf("llama")
    recipe = tmp_path / "s.yaml"
    recipe.write_text(SEARCH.format(path=path, text=text_file))
    done = optkit_cli("search", str(recipe), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    from optkit.results import read_report

    report = read_report(tmp_path / "out")
    res = report.search
    kinds = {c.name: c.kind for c in res.candidates}
    assert kinds["source"] == "source" and kinds["q4_0"] == "uniform"
    # mixes move only groups whose move was timed to save decode time: on a busy machine the head-to-head timing
    # can find none, and then there is no mix to try
    saves = any((g.ms_saved or 0) > 0 for g in res.sensitivity.groups)
    assert ("mix" in kinds.values()) == saves
    assert all(c.left or c.stage == "benchmark" for c in res.candidates)  # who stopped early says why
    assert res.chosen in kinds and res.sensitivity.low == "Q4_0" and res.sensitivity.groups
    assert 0 <= res.bookkeeping_s < res.wall_s and [t.stage for t in res.stages][:2] == ["benchmark", "screen"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'id="search-plot"' in page and 'id="sensitivity"' in page and "budget +50%" in page
    assert list(res.sensitivity.uniform_speedup) == ["Q4_0"] and 'id="type-timings"' in page  # the forecast's order
    chosen = next(c for c in res.candidates if c.name == res.chosen)
    assert chosen.left is None, chosen.left  # what the search ships never "left" it (two runs said "dominated")
    if chosen.kind != "source":  # the file loads in llama.cpp as it is, no optkit code
        import llama_cpp

        llm = llama_cpp.Llama(model_path=chosen.file, n_ctx=64, verbose=False)
        llm.eval(llm.tokenize(b"hello world"))  # its own tokenizer (the source's vocabulary) and a forward pass
        assert llm.n_tokens > 0 and all(math.isfinite(x) for x in llm.scores[llm.n_tokens - 1][:10])
    again = optkit_cli("search", str(recipe), "-o", str(tmp_path / "out"))
    assert again.returncode == 0 and "already done, kept from the previous run" in again.stderr
    assert read_report(tmp_path / "out").search.chosen == res.chosen


def test_search_bad_input(tmp_path):
    plain = tmp_path / "r.yaml"
    plain.write_text("name: r\nmodel: {checkpoint: x}\nvariants: [{name: a}]\n")
    done = optkit_cli("search", str(plain))
    assert done.returncode == 2 and "no search: section" in done.stderr
    with pytest.raises(Exception, match="max_ppl_increase"):
        parse_text("name: r\nmodel: {checkpoint: x}\nvariants: [{name: a}]\nsearch: {max_ppl_increase: lots}\n")
    bad = optkit_cli("search", "smollm2-135m", "--workload", "2000")
    assert bad.returncode == 2 and "PROMPT/OUTPUT" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1



def test_search_through_the_python_api_refuses_as_the_cli_does(tmp_path):
    import optkit
    from optkit.errors import BadInput
    from optkit.search.run import search as run_search  # the package stays importable beside the API function

    assert callable(optkit.search) and callable(run_search)
    plain = tmp_path / "r.yaml"
    plain.write_text("name: r\nmodel: {checkpoint: x}\nvariants: [{name: a}]\n")
    with pytest.raises(BadInput, match="no search: section"):
        optkit.search(plain)
    with pytest.raises(BadInput, match="PROMPT/OUTPUT"):
        optkit.run(plain, tmp_path / "out", workload="2000")
