"""Artifacts a server loads without optkit: `optkit quantize / prune` write an HF folder for a cast, Wanda and
bitsandbytes 4-bit, which plain transformers loads in a fresh process (optkit never imported) with the logits
optkit measured; a replay artifact (no format exists for torchao) loads from a copy, and names its missing
source in one line."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import optkit_cli

PROMPT = [[5, 17, 42, 99, 7, 3, 250, 11, 64, 2, 9, 120]]
ATOL = 1e-5  # the same weights and kernels in both processes: only float noise may differ
PLAIN = """
import sys, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype="auto").eval()  # as servers load it
with torch.inference_mode():
    logits = model(input_ids=torch.tensor({prompt})).logits.float()
assert not any(m == "optkit" or m.startswith("optkit.") for m in sys.modules), "optkit was imported"
torch.save(logits, sys.argv[2])
"""


def optkit_logits(folder):
    from optkit import checkpoints, loading

    lm = loading.load(checkpoints.resolve(str(folder)))
    return lm.logits(torch.tensor(PROMPT))[0].float()


def plain_logits(folder, tmp_path):
    out = tmp_path / "plain.pt"
    run = subprocess.run([sys.executable, "-c", PLAIN.format(prompt=PROMPT), str(folder), str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return torch.load(out)


@pytest.mark.parametrize("command, method, params, fmt", [
    ("quantize", "cast", ["dtype=bfloat16"], "hf"),
    ("prune", "prune.wanda", ["sparsity=0.5", "calibration={{path: {text}, samples: 4, seq_len: 32}}"], "hf"),
    ("quantize", "bnb.4bit", ["blocksize=32", "exclude=[lm_head]"], "bnb"),
], ids=["cast-bf16", "wanda-50", "bnb-4bit"])
def test_artifact_loads_in_plain_transformers(tmp_path, tiny_model, text_file, command, method, params, fmt):
    out = tmp_path / "art"
    args = [a for p in params for a in ("-p", p.format(text=text_file))]
    run = optkit_cli(command, str(tiny_model), method, *args, "-o", str(out))
    assert run.returncode == 0, run.stderr[-2000:]
    manifest = json.loads((out / "optkit.json").read_text())
    assert manifest["format"] == fmt and manifest["steps"][0]["method"] == method
    assert manifest["source"]["sha256"] and manifest["records"][0]["modules_changed"]
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    ours, plain = optkit_logits(out), plain_logits(out, tmp_path)
    assert (ours - plain).abs().max() <= ATOL


def test_replay_artifact_loads_from_a_copy_and_names_a_missing_source(tmp_path, tiny_model, text_file):
    source = tmp_path / "source"
    shutil.copytree(tiny_model, source)
    art = tmp_path / "art"
    run = optkit_cli("quantize", str(source), "torchao.int8_weight_only", "-o", str(art))
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((art / "optkit.json").read_text())["format"] == "replay"
    before = optkit_logits(art)
    copy = tmp_path / "elsewhere" / "art"
    shutil.copytree(art, copy)
    shutil.rmtree(art)
    assert torch.equal(optkit_logits(copy), before)  # found where the source was last seen, hash checked

    shutil.rmtree(source)
    ev = optkit_cli("eval", str(copy), "--text", str(text_file), "--max-tokens", "64", "-o", str(tmp_path / "ev"))
    assert ev.returncode == 2, ev.stderr[-2000:]
    [line] = [ln for ln in ev.stderr.splitlines() if ln.startswith("optkit: error")]
    assert "sha256" in line and str(source) in line and "cannot be found" in line
    assert not (tmp_path / "ev" / "variants").exists()  # refused before any worker started
