"""Engine environments (optkit/envs.py) without any engine library: a real virtual environment built from a
requirements file that needs nothing from the network, reused, rebuilt when its pins change; the worker's
import path holds only this optkit; an interpreter other than this one runs a module through isolate.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from optkit import envs
from optkit.isolate import run_module


@pytest.fixture()
def spec(tmp_path, monkeypatch):
    """An EnvSpec whose requirements file sits in a package folder of the test's own."""
    pkg = tmp_path / "src" / "toyengine"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "requirements-cpu.txt").write_text("# nothing to install: the standard library is enough\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.setenv("OPTKIT_ENVS", str(tmp_path / "envs"))
    monkeypatch.setenv("OPTKIT_ENV_BUILD", "cpu")
    return envs.EnvSpec(name="toy", folder="toyengine", requirements={"cpu": "requirements-cpu.txt"}, probe="json",
                        record=("pip",))


def test_build_reuse_and_a_new_environment_when_the_pins_change(spec, tmp_path):
    assert envs.ready(spec) is None
    said = []
    folder = envs.build(spec, say=said.append)
    assert folder.parent == tmp_path / "envs" and folder.name.startswith("toy-cpu-")
    assert envs.ready(spec) == folder and envs.python(folder).is_file()
    assert any("built the toy environment in" in s and "GiB" in s for s in said), said
    # what it was built with is recorded (nothing here: no pip inside, optkit's pip installs into it)
    assert json.loads((folder / "versions.json").read_text()) == {} and envs.key_versions(folder, spec) == {}
    # its interpreter is not this one: its own prefix, without this environment's packages
    out = subprocess.run([str(envs.python(folder)), "-c", "import sys, importlib.util; print(sys.prefix); "
                          "print(importlib.util.find_spec('pydantic') is None)"],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == [str(folder), "True"], out.stderr
    said.clear()
    assert envs.build(spec, say=said.append) == folder and said == []  # reused: nothing printed, nothing built
    req = tmp_path / "src" / "toyengine" / "requirements-cpu.txt"
    req.write_text(req.read_text() + "# another pin\n")
    assert envs.location(spec) != folder and envs.ready(spec) is None


def test_a_failed_build_says_where_and_leaves_no_ready_environment(spec, tmp_path):
    from optkit.errors import RunError

    bad = envs.EnvSpec(name="toy", folder="toyengine", requirements={"cpu": "requirements-cpu.txt"},
                       probe="no_such_module_here")
    with pytest.raises(RunError) as err:
        envs.build(bad)
    assert "import no_such_module_here" in str(err.value) and "\n" not in str(err.value)
    assert envs.ready(bad) is None
    with pytest.raises(Exception, match="no cuda build"):
        envs.location(bad, "cuda")


def test_worker_imports_this_optkit_and_nothing_of_this_environment(spec, tmp_path):
    import optkit

    folder = tmp_path / "envs" / "toy-cpu-x"
    folder.mkdir(parents=True)
    env = envs.worker_env(folder, {"PATH": "/usr/bin:/bin", "PYTHONPATH": "/somewhere/else"})
    [path] = env["PYTHONPATH"].split(":")
    assert sorted(p.name for p in Path(path).iterdir()) == ["optkit"]
    assert (Path(path) / "optkit").resolve() == Path(optkit.__file__).resolve().parent
    # an interpreter isolated from this environment's site-packages (-S) still finds optkit through it
    out = subprocess.run([sys.executable, "-S", "-c", "import optkit.errors, sys; print(optkit.__file__); "
                          "print('pydantic' in sys.modules)"], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0].startswith(path) and out.stdout.split()[1] == "False"


def test_run_module_under_another_interpreter_and_appending_to_the_log(tmp_path):
    log = tmp_path / "w.log"
    log.write_text("first stage\n")
    script = tmp_path / "m" / "probe_mod.py"
    script.parent.mkdir()
    script.write_text("import sys; print('ran under', sys.executable)\n")
    # a venv made here is the other interpreter (no packages needed for this module)
    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True)
    outcome = run_module("probe_mod", [], log, timeout=60, env={"PYTHONPATH": str(script.parent)},
                         python=str(venv / "bin" / "python"), append=True)
    assert outcome.code == 0
    lines = log.read_text().splitlines()
    assert lines[0] == "first stage" and lines[1] == f"ran under {venv / 'bin' / 'python'}"


def test_engines_without_an_environment_run_here_and_vllm_declares_one():
    from optkit.handoff import engine_of
    from optkit.recipe import Variant

    class Job:  # what engine_of reads of a VariantJob: the engine the variant starts in
        def __init__(self, engine):
            self.variant = Variant(name="v", engine=engine)
            self.engine = engine or "torch"

    assert envs.spec_of("torch") is None and engine_of(Job("torch")) is None and engine_of(Job(None)) is None
    spec = envs.spec_of("vllm")
    assert spec is not None and spec.name == "vllm" and engine_of(Job("vllm")) == "vllm"
    for kind in ("cpu", "cuda"):  # both builds' pins ship with the package
        assert envs.requirements(spec, kind).is_file()


def test_processes_an_engine_leaves_behind_are_ended(tmp_path):
    """vLLM's engine core and worker outlive a worker killed at its timeout: the handoff adopts them (subreaper)
    and ends them. Here a child starts a long sleep and exits at once, as a killed worker would."""
    import os
    import time

    from optkit.handoff import _adopt_orphans, _children, _kill_orphans

    before = _adopt_orphans()
    pidfile = tmp_path / "pid"
    subprocess.run([sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen(['sleep', '60']); "
                    f"open({str(pidfile)!r}, 'w').write(str(p.pid))"], check=True)
    orphan = int(pidfile.read_text())
    for _ in range(50):  # reparenting happens as the child exits
        if orphan in _children():
            break
        time.sleep(0.1)
    assert orphan in _children() - before
    _kill_orphans(before)
    assert orphan not in _children() and not os.path.exists(f"/proc/{orphan}")


def test_a_handoff_into_a_folder_not_yet_made_makes_it(tmp_path, monkeypatch):
    """The baseline benchmarked again after the last variant (pipeline._baseline_again) writes into the run's
    baselines/ folder, which nothing had made: a vLLM baseline converted from a GGUF file then failed in
    tempfile.mkdtemp with a traceback after 45 minutes of results (recipes/vllm-cpu.yaml)."""
    from optkit import envs, handoff
    from optkit.job import VariantJob
    from optkit.results import VariantResult

    monkeypatch.setattr(handoff, "engine_of", lambda job: "vllm")
    monkeypatch.setattr(envs, "ready", lambda spec: tmp_path / "env")
    monkeypatch.setattr(envs, "key_versions", lambda folder, spec: {})
    seen = []

    def run_job(job, out, log, env, shown_log, python=None, append=False):  # the build worker: it fails here
        seen.append(Path(job.save_to).parent)
        assert Path(job.save_to).parent.is_dir()
        return VariantResult(name=job.variant.name, status="failed", error="stand-in")

    job = VariantJob.model_validate({"variant": {"name": "base", "engine": "vllm"},
                                     "checkpoint": {"given": "m.gguf", "location": "m.gguf", "kind": "gguf"},
                                     "model": {"checkpoint": "m.gguf"}, "device": "cpu"})
    out = tmp_path / "run" / "baselines" / "again.json"
    result = handoff.run(job, out, tmp_path / "run" / "logs" / "base.log", None, None, run_job)
    assert result.status == "failed" and seen and seen[0].parent == out.parent
    assert not seen[0].exists()  # the scratch folder went with the failed build
