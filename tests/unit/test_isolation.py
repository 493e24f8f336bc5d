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
warm = ("torch",) if sys.argv[3] == "warm" else ()
run_module("tests.unit.spawner", [sys.argv[1]], Path(sys.argv[2]), warm=warm)
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


@pytest.mark.parametrize("start", ["fresh", "warm"])
def test_a_timeout_kills_the_workers_children_too(tmp_path, monkeypatch, start):
    from optkit.isolate import run_module

    monkeypatch.setenv("PYTHONPATH", env()["PYTHONPATH"])
    pids = tmp_path / "pids"
    if start == "warm":  # the server up first: its imports would take most of the 8 s
        assert run_module("tests.unit.echo", [], tmp_path / "log", timeout=120, warm=("torch",)).code == 7
    started = time.time()
    warm = ("torch",) if start == "warm" else ()
    outcome = run_module("tests.unit.spawner", [str(pids)], tmp_path / "log", timeout=8, warm=warm)
    assert outcome.timed_out and time.time() - started < 60
    worker, child = wait_for(pids, 1)
    assert gone([worker, child]), "the converter-like child outlived its timed-out worker"


def test_a_warm_start_is_a_fresh_process_to_the_module(tmp_path, monkeypatch):
    """Forked from the warm server: argv, the caller's environment, output into the log (appended with append),
    the exit code, a process group of its own, and the exit functions it registered run. A server serves one
    environment and exactly the libraries it was asked for."""
    from optkit.isolate import run_module

    monkeypatch.setenv("PYTHONPATH", env()["PYTHONPATH"])
    log = tmp_path / "log"
    log.write_text("kept\n")

    def echo(warm, args=("a", "b c"), **kw) -> dict:
        assert run_module("tests.unit.echo", list(args), log, timeout=120, warm=warm, **kw).code == 7
        return dict(line.split("=", 1) for line in log.read_text().splitlines() if "=" in line)

    facts = echo(("torch",), append=True)
    assert log.read_text().startswith("kept\n") and log.read_text().endswith("atexit ran\n")
    assert facts["argv"] == "['a', 'b c']" and facts["name"] == "__main__" and facts["group_leader"] == "True"
    assert facts["path"] == os.environ["PATH"] and facts["preloaded"] == "['torch']"
    other = {**os.environ, "PATH": "/usr/bin:/bin"}
    facts = echo(("torch", "xml.dom.minidom"), env=other)
    assert facts["path"] == "/usr/bin:/bin" and facts["preloaded"] == "['torch', 'xml.dom.minidom']"
    again = echo(("torch", "xml.dom.minidom"), env=other)
    assert again["parent"] == facts["parent"] != str(os.getpid())  # the same server again
    assert echo(("torch",), env=other)["preloaded"] == "['torch']"  # exactly the libraries asked for
    warm = echo(("torch",), ["--torch"])
    monkeypatch.setenv("OPTKIT_WARM_START", "0")  # switched off: a fresh process
    fresh = echo(("torch",), ["--torch"])
    assert fresh["preloaded"] == "[]" and warm["preloaded"] == "['torch']"
    # the same resident set once torch is imported: a fork leaves the libraries' file pages unmapped (~25% of it
    # here) until the child maps them again, and the peak-memory figure of every variant would start that low
    assert int(warm["rss_kb"]) == pytest.approx(int(fresh["rss_kb"]), rel=0.05)


@pytest.mark.parametrize("how, start", [(signal.SIGKILL, "fresh"), (signal.SIGINT, "fresh"),
                                        (signal.SIGTERM, "fresh"), (signal.SIGKILL, "warm"),
                                        (signal.SIGINT, "warm")])
def test_the_orchestrator_gone_takes_the_whole_group(tmp_path, how, start):
    """kill -9 (nothing of the orchestrator runs: the kernel's parent-death signal and the worker's guard do it),
    Ctrl-C and SIGTERM (the orchestrator kills the group as it unwinds)."""
    pids = tmp_path / "pids"
    prelude = {  # SIGINT as a terminal's Ctrl-C delivers it: a suite started in the background by a non-interactive
        # shell inherits SIGINT ignored, and Python then leaves it ignored
        signal.SIGINT: "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n",
        signal.SIGTERM: "import signal, sys\nsignal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))\n",
    }
    code = prelude.get(how, "") + ORCHESTRATOR
    orchestrator = subprocess.Popen([sys.executable, "-c", code, str(pids), str(tmp_path / "log"), start], env=env())
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
