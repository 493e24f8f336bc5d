"""Trust comes only from the person running optkit: a recipe or an artifact cannot grant it, the flags the error
messages advise exist on every command that loads a model, a malicious folder never runs its payload without
them, hub ids are pinned by commit, and the Ray head optkit starts asks for a token."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from optkit.errors import BadInput

COMMANDS = {  # every command that loads a model, as a user types it (CHECKPOINT and OUT filled in)
    "run": None,  # a recipe naming the checkpoint
    "plan": None,
    "eval": ["eval", "{ckpt}", "--max-tokens", "32", "-o", "{out}"],
    "bench": ["bench", "{ckpt}", "--gen-len", "2", "--repeats", "1", "--min-seconds", "0", "-o", "{out}"],
    "quantize": ["quantize", "{ckpt}", "cast", "-p", "dtype=bfloat16", "-o", "{out}"],
    "prune": ["prune", "{ckpt}", "prune.magnitude", "-p", "sparsity=0.5", "-o", "{out}"],
    "export": ["export", "{ckpt}", "--format", "onnx", "-o", "{out}"],
}
PAYLOAD = """\
import pathlib
pathlib.Path({marker!r}).write_text("pwned")
"""


class Pickled:
    """A pickle whose loading writes the marker: the code a .bin can run."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (PAYLOAD.format(marker=self.marker),))


def pickle_folder(root: Path, tiny_model: Path, marker: Path) -> Path:
    """An HF folder whose only weights are a pickle payload."""
    import torch

    folder = root / "pickled"
    shutil.copytree(tiny_model, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"payload": Pickled(str(marker))}, folder / "pytorch_model.bin")
    return folder


def remote_code_folder(root: Path, tiny_model: Path, marker: Path) -> Path:
    """An HF folder whose config names its own code (auto_map), which writes the marker when imported."""
    folder = root / "remote"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    config["model_type"] = "evil"  # no built-in class to fall back on: only its own code can read it
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(PAYLOAD.format(marker=str(marker)) + textwrap.dedent("""
        from transformers import LlamaConfig, LlamaForCausalLM
        class EvilConfig(LlamaConfig):
            model_type = "evil"
        class EvilModel(LlamaForCausalLM):
            config_class = EvilConfig
        """))
    return folder


def replay_of(root: Path, name: str, source: Path, grants: dict) -> Path:
    """A replay artifact of `source` whose model section grants trust (as optkit.json could before) and whose
    `needs` lies."""
    from optkit.checkpoints import content_hash

    replay = root / name
    replay.mkdir()
    (replay / "optkit.json").write_text(json.dumps({
        "optkit": "0.1.0", "format": "replay", "model_format": "hf", "engine": "torch", "dtype": "float32",
        "needs": [], "source": {"given": str(source), "kind": "folder", "format": "hf",
                                "sha256": content_hash(str(source)), "last_seen": str(source)},
        "model": {"checkpoint": str(source), **grants}, "steps": [], "records": []}))
    return replay


def claiming_artifacts(root: Path, source: Path, remote: Path) -> list[Path]:
    """Folders claiming trust in their optkit.json: replay artifacts of the pickle folder and of the remote-code
    folder, and an 'hf' artifact holding the pickle."""
    replay = replay_of(root, "replay-art", source, {"trust_pickle": True})
    replay_remote = replay_of(root, "replay-remote", remote, {"trust_remote_code": True})
    hf = root / "hf-art"
    shutil.copytree(source, hf)
    (hf / "optkit.json").write_text(json.dumps({
        "optkit": "0.1.0", "format": "hf", "needs": [], "model": {"checkpoint": "x", "trust_pickle": True},
        "source": {"given": "x", "kind": "folder", "sha256": None}, "steps": [], "records": []}))
    return [replay, replay_remote, hf]


def invoke(name: str, ckpt: Path, tmp: Path, *flags: str):
    """The command in this process (click's runner): preflight refusals never start a worker; anything that
    gets further runs in a worker process, whose payload would write the same marker."""
    from click.testing import CliRunner

    from optkit.cli import main

    out = tmp / f"out-{name}-{ckpt.name}-{len(flags)}"
    if name in ("run", "plan"):
        recipe = tmp / f"{name}-{ckpt.name}.yaml"
        recipe.write_text(f"name: t\nmodel: {{checkpoint: {ckpt}}}\nvariants: [{{name: base}}]\n"
                          "eval: {perplexity: {max_tokens: 32}, fidelity: null}\nbench: null\n")
        args = [name, str(recipe)] + (["-o", str(out)] if name == "run" else [])
    else:
        args = [a.format(ckpt=ckpt, out=out) for a in COMMANDS[name]]
    return CliRunner().invoke(main, [*args, *flags])


def test_a_malicious_folder_never_runs_its_payload_without_the_flag(tmp_path, tiny_model):
    marker = tmp_path / "marker"
    pickled = pickle_folder(tmp_path, tiny_model, marker)
    remote = remote_code_folder(tmp_path, tiny_model, marker)
    folders = [pickled, remote, *claiming_artifacts(tmp_path, pickled, remote)]
    for name in COMMANDS:
        for folder in folders:
            result = invoke(name, folder, tmp_path)
            assert result.exit_code == 2, (name, folder.name, result.output[-1500:])
            [line] = [ln for ln in result.output.splitlines() if ln.startswith("optkit: error")]
            flag = "--trust-remote-code" if "remote" in folder.name else "--allow-pickle"
            assert flag in line, (name, folder.name, line)
            assert not marker.exists(), f"{name} on {folder.name} ran the payload without {flag}"
    # the advice can be followed: with the flag, the remote code is the caller's choice and it does run
    result = invoke("plan", folders[1], tmp_path, "--trust-remote-code")
    assert "No such option" not in result.output and marker.exists(), result.output[-1500:]


def test_the_flags_exist_on_every_command_that_loads_a_model():
    from click.testing import CliRunner

    from optkit.cli import main

    for name in COMMANDS:
        text = CliRunner().invoke(main, [name, "--help"]).output
        assert "--allow-pickle" in text and "--trust-remote-code" in text and "--revision" in text, name
        assert "--trust-pickle" not in text  # the old name still works, hidden


def test_a_recipe_cannot_grant_trust(tmp_path):
    from optkit.recipe import parse_text

    for key, flag in (("trust_pickle", "--allow-pickle"), ("trust_remote_code", "--trust-remote-code")):
        with pytest.raises(BadInput) as info:
            parse_text(f"name: r\nmodel:\n  checkpoint: x\n  {key}: true\nvariants: [{{name: a}}]\n", "r.yaml")
        text = str(info.value)
        assert text.startswith(f"r.yaml:4: model.{key}: cannot be set in a recipe") and flag in text, text


def test_an_artifact_records_the_trust_its_source_needed(tmp_path, tiny_model):
    """A replay artifact built from a pickle-only folder with --allow-pickle asks for the flag again."""
    from optkit import artifacts, checkpoints, loading
    from optkit.engines.method import apply_steps
    from optkit.recipe import ModelSpec, Step
    from optkit.trust import Trust

    pickled = tmp_path / "weights"
    shutil.copytree(tiny_model, pickled)
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    source = checkpoints.resolve(str(pickled))
    lm = loading.load(source, trust_pickle=True)
    steps = [Step(method="torch.dynamic_int8")]
    lm, records = apply_steps(lm, steps)
    art = tmp_path / "art"
    artifacts.write(art, lm, source, ModelSpec(checkpoint=str(pickled)), steps, records, Trust(allow_pickle=True))
    manifest = json.loads((art / "optkit.json").read_text())
    assert manifest["format"] == "replay" and manifest["needs"] == ["allow_pickle"]
    ckpt = checkpoints.resolve(str(art))
    for call in (lambda: loading.describe(ckpt, "float32", "cpu"), lambda: loading.load(ckpt)):
        with pytest.raises(BadInput, match="--allow-pickle"):
            call()
    assert loading.load(ckpt, trust_pickle=True).vocab_size > 0


def test_hub_revision_resolves_to_a_commit_from_the_local_cache(tmp_path, monkeypatch, tiny_model):
    """Nothing can be fetched here: a hub cache laid out as huggingface_hub writes it (refs/<revision> holds the
    commit). The hub's own answer (online) is unverified here."""
    from huggingface_hub import constants

    from optkit import checkpoints
    from optkit.evaluators.cache import model_key
    from optkit.pipeline import _source
    from optkit.reuse import source_hash

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    refs = tmp_path / "hub" / "models--org--model" / "refs"
    refs.mkdir(parents=True)
    main_sha, v1_sha = "a" * 40, "b" * 40
    (refs / "main").write_text(main_sha)
    (refs / "v1").write_text(v1_sha)
    assert checkpoints.resolve("org/model").commit == main_sha
    v1 = checkpoints.resolve("org/model", revision="v1")
    assert (v1.revision, v1.commit, v1.pinned()) == ("v1", v1_sha, v1_sha)
    assert checkpoints.resolve("org/model", revision="c" * 40).commit == "c" * 40  # a commit is itself
    assert checkpoints.resolve("org/model", revision="nope").commit is None
    record = _source(v1)
    assert (record.revision, record.commit) == ("v1", v1_sha)  # what report.json pins
    main = checkpoints.resolve("org/model")
    assert model_key(main, "float32", "cpu", []) != model_key(v1, "float32", "cpu", [])  # the eval cache
    assert source_hash(main) != source_hash(v1)  # result reuse
    unknown = checkpoints.resolve("org/model", revision="nope")
    assert model_key(unknown, "float32", "cpu", []) is None and source_hash(unknown) is None  # never reused
    with pytest.raises(BadInput, match="--revision / model.revision is for hub ids"):
        checkpoints.resolve(str(tiny_model), revision="v1")


def test_a_hub_sourced_artifact_is_pinned_by_commit(tmp_path):
    from optkit.artifacts import find_source

    manifest = {"source": {"given": "org/model", "kind": "hub", "format": "hf", "commit": "d" * 40}}
    ckpt = find_source(tmp_path, manifest)
    assert ckpt.kind == "hub" and ckpt.pinned() == "d" * 40
    manifest["source"].pop("commit")
    with pytest.raises(BadInput, match="records no commit"):
        find_source(tmp_path, manifest)
    with pytest.raises(BadInput, match="records no content hash"):
        find_source(tmp_path, {"source": {"given": str(tmp_path), "kind": "folder", "sha256": None}})


def test_ray_remote_nodes_never_get_a_path_of_this_machine(tmp_path, tiny_model):
    """The check before the sweep, with the cluster's node list as Ray reports it (a real multi-machine cluster
    is unverified here: the test cluster's nodes are all this machine)."""
    from optkit.checkpoints import resolve
    from optkit.executors.ray import check_paths
    from optkit.job import VariantJob
    from optkit.recipe import ModelSpec, Variant

    job = VariantJob(variant=Variant(name="a"), checkpoint=resolve(str(tiny_model)),
                     model=ModelSpec(checkpoint=str(tiny_model)), device="cpu")
    here = [{"NodeManagerAddress": "10.0.0.1"}, {"NodeManagerAddress": "10.0.0.1"}]
    check_paths([job], [], here, "10.0.0.1")  # one machine: nothing to check
    spread = [*here, {"NodeManagerAddress": "10.0.0.2"}]
    with pytest.raises(BadInput, match=r"model.checkpoint .* nodes on 10.0.0.2; .* executor.shared"):
        check_paths([job], [], spread, "10.0.0.1")
    check_paths([job], [str(tiny_model.parent)], spread, "10.0.0.1")  # under a shared folder: fine


RAY_SCRIPT = """\
import os, subprocess, sys
os.environ.pop("RAY_AUTH_MODE", None); os.environ.pop("RAY_AUTH_TOKEN", None)
from optkit.executors.ray import RayExecutor
from optkit.recipe import ExecutorSpec
ex = RayExecutor(ExecutorSpec(kind="ray"))
ex._connect()
import ray
gcs = ray.get_runtime_context().gcs_address
token = os.environ.get("RAY_AUTH_TOKEN", "")
code = ("import ray\\ntry:\\n ray.init(address=%r, logging_level='error')\\n print('CONNECTED')\\n"
        "except Exception as e:\\n print('REFUSED', type(e).__name__)\\n") % gcs
env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {"RAY_AUTH_MODE": "disabled"}
out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
print("MODE", os.environ.get("RAY_AUTH_MODE"), "TOKEN", len(token), "STRANGER", out.stdout.strip().splitlines()[-1:])
ex.close()
"""


def test_the_ray_head_optkit_starts_requires_a_token(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'optkit[ray]'")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)  # nothing may be written under the user's ~/.ray
    out = subprocess.run([sys.executable, "-c", RAY_SCRIPT], env=env, capture_output=True, text=True, timeout=500)
    assert "MODE token TOKEN 64 STRANGER ['REFUSED ConnectionError']" in out.stdout, out.stdout + out.stderr[-3000:]
    assert not (tmp_path / ".ray" / "auth_token").exists()
