"""llama.cpp through the CLI as users run it: a recipe comparing a PyTorch baseline with its GGUF exports
reports each variant's engine and the file to deploy, and recommends one naming both; `optkit export --format
gguf` and `optkit quantize ... gguf.quantize` write files llama.cpp and optkit load back; a .gguf file runs as
shipped with --engine llamacpp; and each bad input is refused before any variant builds (exit 2, one line)."""

import json

import pytest

pytest.importorskip("llama_cpp")

from click.testing import CliRunner  # noqa: E402

from optkit.cli import main  # noqa: E402
from tests.conftest import optkit_cli  # noqa: E402

EVAL = """\
eval:
  perplexity: {{path: {text}, max_tokens: 256, window: 64, stride: 32}}
  fidelity: {{samples: 2, seq_len: 32, path: {text}}}
"""
BENCH = "bench: {prompt_len: 8, gen_len: 8, warmup: 0, repeats: 2, max_repeats: 3, min_seconds: 0, paired_rounds: 2}\n"


def test_recipe_compares_engines_and_names_the_file(tmp_path, tiny_model, text_file):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
name: mixed
model: {{checkpoint: {tiny_model}}}
variants:
  - name: fp32
  - name: gguf-f32
    steps: [{{method: gguf.export}}]
  - name: q8
    steps: [{{method: gguf.export}}, {{method: gguf.quantize, params: {{type: Q8_0}}}}]
{EVAL.format(text=text_file)}{BENCH}""")
    result = optkit_cli("run", str(recipe), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    v = {c["name"]: c for c in report["variants"]}
    assert (v["fp32"]["engine"], v["fp32"]["format"], v["fp32"]["file"]) == ("torch", "hf", None)
    for name in ("gguf-f32", "q8"):
        assert v[name]["engine"] == "llamacpp" and v[name]["format"] == "gguf"
        assert v[name]["file"] == str(tmp_path / "run" / "artifacts" / f"{name}.gguf")
        assert (tmp_path / "run" / "artifacts" / f"{name}.gguf").is_file()
        # llama.cpp and torch in one process: 2 rounds, or fewer flagged noisy when a busy machine made rounds collapse
        paired = v[name]["bench"]["paired"]["decode_speedup"]
        assert paired["n"] == 2 or (paired["n"] >= 1 and paired["noisy"]), paired
    ppl = {n: next(a["value"] for a in c["accuracy"] if a["metric"] == "token_perplexity") for n, c in v.items()}
    assert abs(ppl["gguf-f32"] / ppl["fp32"] - 1) < 0.005  # f32 GGUF: PyTorch's perplexity, llama.cpp's logits
    top1 = next(a["value"] for a in v["gguf-f32"]["accuracy"] if a["metric"] == "top1_agreement")
    assert top1 >= 0.99
    table = result.stdout
    assert "gguf-f32 [llama.cpp]" in table and "fp32 [PyTorch] (baseline)" in table
    headline = next(line for line in table.splitlines() if line.startswith(("Ship", "Keep")))
    chosen = headline.split(":")[0].removeprefix("Ship ")  # llama.cpp runs the tiny model far faster than torch
    assert chosen in ("q8", "gguf-f32") and f"Deploy it in llama.cpp: {v[chosen]['file']}." in headline


def test_export_quantize_and_as_shipped(tmp_path, tiny_model, text_file):
    runner = CliRunner()
    out = tmp_path / "exported"
    run = runner.invoke(main, ["export", str(tiny_model), "--format", "gguf", "-p", "outtype=f16", "-o", str(out)])
    assert run.exit_code == 0, run.output
    assert (out / "model-f16.gguf").is_file() and f"wrote {out / 'model-f16.gguf'}" in run.output
    assert "top-1 agreement 100.0%" in run.output
    quant = tmp_path / "quant"
    run = runner.invoke(main, ["quantize", str(out), "gguf.quantize", "-p", "type=Q8_0", "-o", str(quant)])
    assert run.exit_code == 0, run.output
    assert (quant / "model-Q8_0.gguf").is_file() and json.loads((quant / "optkit.json").read_text())["format"] == "gguf"
    from optkit import checkpoints, loading

    lm = loading.load(checkpoints.resolve(str(quant)))
    assert lm.engine == "llamacpp" and lm.path == quant / "model-Q8_0.gguf"
    # a bare .gguf file: PyTorch by default (converted), llama.cpp as shipped with --engine llamacpp
    shipped = quant / "model-Q8_0.gguf"
    for engine in (None, "llamacpp"):
        out_dir = str(tmp_path / f"e{engine}")
        args = ["eval", str(shipped), "--text", str(text_file), "--max-tokens", "128", "-o", out_dir]
        run = runner.invoke(main, args + (["--engine", engine] if engine else []))
        assert run.exit_code == 0, run.output
        cand = json.loads((tmp_path / f"e{engine}" / "report.json").read_text())["variants"][0]
        assert cand["engine"] == (engine or "torch")
        assert cand["file"] == (str(shipped) if engine else None)


def _gguf(path, arch):
    """A minimal GGUF file of an architecture, with one tensor: enough for the header and the probe."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


EXPORT = "{method: gguf.export}"
# case -> (checkpoint: None = the tiny HF model, else a GGUF of this architecture; engine; steps; the line's words)
BAD = {
    "quant-type": (None, None, f"[{EXPORT}, {{method: gguf.quantize, params: {{type: Q9_K}}}}]",
                   "quant type 'Q9_K' is not one the installed llama.cpp knows"),
    "torch-after-gguf": (None, None, f"[{EXPORT}, {{method: torchao.int8_weight_only}}]",
                         "exported the model to llama.cpp"),
    "cast-after-gguf": (None, None, f"[{EXPORT}, {{method: cast, params: {{dtype: bfloat16}}}}]",
                        "exported the model to llama.cpp"),
    "llamacpp-arch": ("qwen3_moe", "llamacpp", "[]", "cannot read GGUF architecture 'qwen3_moe'"),
    "llamacpp-arch-gptj": ("gptj", "llamacpp", "[]", "llama.cpp 0.3.36 cannot read GGUF architecture 'gptj'"),
    "transformers-arch": ("gptj", None, "[]", "transformers cannot read GGUF architecture 'gptj'"),
    "packed-export": (None, None, f"[{{method: torchao.int8_weight_only}}, {EXPORT}]", "already quantized"),
    "needs-imatrix": (None, None, f"[{EXPORT}, {{method: gguf.quantize, params: {{type: IQ2_XXS}}}}]",
                      "needs an importance matrix"),
    "embedding-type-misfit": (None, None, f"[{EXPORT}, {{method: gguf.quantize, params: {{type: Q8_0, "
                              "token_embedding_type: Q4_K}}]", "token_embd.weight has rows of 64 weights"),
    "engine-name": (None, "llama.cpp", "[]", "did you mean 'llamacpp'"),
    "engine-format": (None, "llamacpp", "[]", "engine 'llamacpp' runs a GGUF file"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_refused_before_any_variant(tmp_path, tiny_model, text_file, case):
    arch, engine, steps, needle = BAD[case]
    checkpoint = _gguf(tmp_path / "m.gguf", arch) if arch else tiny_model
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(f"""\
name: bad
model: {{checkpoint: {checkpoint}}}
variants:
  - name: v
    steps: {steps}
{f"    engine: {engine}" if engine else ""}
eval:
  perplexity: {{path: {text_file}, max_tokens: 64, window: 32, stride: 16}}
bench: null
""")
    run = CliRunner().invoke(main, ["run", str(recipe), "--out", str(tmp_path / "run")])
    assert run.exit_code == 2, run.output
    assert run.output.startswith("optkit: error:") and run.output.count("\n") == 1 and needle in run.output, run.output
    assert not (tmp_path / "run" / "variants").exists()
