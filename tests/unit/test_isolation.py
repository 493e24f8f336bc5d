"""Bounded steps: a variant has a default time limit; a timeout, Ctrl-C or a kill -9 of the orchestrator ends the
worker's whole process group (the converters it started included); a probe that times out is a warning, not a
traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORCHESTRATOR = """\
import sys
from pathlib import Path
from optkit.isolate import run_module
run_module("tests.unit.spawner", [sys.argv[1]], Path(sys.argv[2]))
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie waiting for its reaper is dead


def wait_for(path: Path, timeout: float = 120) -> list[int]:
    end = time.time() + timeout
    while time.time() < end:
        if path.is_file() and path.read_text().strip():
            return [int(x) for x in path.read_text().split()]
        time.sleep(0.05)
    raise TimeoutError(path)


def gone(pids: list[int], timeout: float = 15) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_a_timeout_kills_the_workers_children_too(tmp_path, monkeypatch):
    from optkit.isolate import run_module

    monkeypatch.setenv("PYTHONPATH", env()["PYTHONPATH"])
    pids = tmp_path / "pids"
    started = time.time()
    outcome = run_module("tests.unit.spawner", [str(pids)], tmp_path / "log", timeout=8)
    assert outcome.timed_out and time.time() - started < 60
    worker, child = wait_for(pids, 1)
    assert gone([worker, child]), "the converter-like child outlived its timed-out worker"


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_the_orchestrator_gone_takes_the_whole_group(tmp_path, how):
    """kill -9 (nothing of the orchestrator runs: the kernel's parent-death signal and the worker's guard do it),
    Ctrl-C and SIGTERM (the orchestrator kills the group as it unwinds)."""
    pids = tmp_path / "pids"
    prelude = {  # SIGINT as a terminal's Ctrl-C delivers it: a suite started in the background by a non-interactive
        # shell inherits SIGINT ignored, and Python then leaves it ignored
        signal.SIGINT: "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n",
        signal.SIGTERM: "import signal, sys\nsignal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))\n",
    }
    code = prelude.get(how, "") + ORCHESTRATOR
    orchestrator = subprocess.Popen([sys.executable, "-c", code, str(pids), str(tmp_path / "log")], env=env())
    worker, child = wait_for(pids)
    os.kill(orchestrator.pid, how)
    orchestrator.wait(60)
    assert gone([worker, child]), f"after {how!r} of the orchestrator, its worker or the worker's child lived on"


def test_a_variant_has_a_default_time_limit_and_the_recipe_and_variant_override_it():
    from optkit.job import VariantJob
    from optkit.recipe import DEFAULT_TIMEOUT_S, parse_text

    text = "name: r\nmodel: {checkpoint: x}\nvariants: [{name: a}, {name: b, timeout_s: 60}]\n"
    recipe = parse_text(text)
    assert recipe.timeout_s == DEFAULT_TIMEOUT_S == 3 * 3600
    job = lambda v, t: VariantJob.model_construct(variant=v, timeout_s=t)  # noqa: E731
    assert job(recipe.variants[0], recipe.timeout_s).timeout == DEFAULT_TIMEOUT_S
    assert job(recipe.variants[1], recipe.timeout_s).timeout == 60
    shorter = parse_text(text + "timeout_s: 600\n")
    assert job(shorter.variants[0], shorter.timeout_s).timeout == 600


def test_a_probe_that_times_out_is_unknown_not_a_traceback(tmp_path, monkeypatch, capsys):
    pytest.importorskip("llama_cpp")
    from optkit.engines.llamacpp import engine

    def slow(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout"))

    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    monkeypatch.setattr(subprocess, "run", slow)
    engine.probe(path)  # no exception: not checked
    assert "timed out" in capsys.readouterr().err
