"""Executors without a cluster: the live board, the log watcher, the node lock, node facts and hardware classes
(GPU facts from a fake nvidia-smi), Ray task options for GPUs (unverifiable on this CPU machine otherwise),
the local executor's retry, per-class speed-ups in the report, and bad input refused with exit 2."""

import io
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from optkit import node
from optkit.executors import nodelock
from optkit.live import Board
from optkit.progress import watching
from optkit.results import BenchResult, Energy, NodeRecord, Report, VariantResult
from optkit.stats import Stats
from tests.conftest import optkit_cli


def test_board_plain_lines_for_each_phase():
    said = []
    board = Board({"a": "[1/2] a", "b": "[2/2] b"}, said.append)
    board.update("a", state="starting", node="n1")
    board.marker("a", "phase", "building")
    board.marker("a", "progress", "sensitivity ranking 3/10 (4 s)")  # a count: live view only
    board.marker("a", "phase", "waiting: a benchmark has this node")
    board.update("a", state="ok")  # how it ended is the pipeline's line
    board.say("[1/2] a: ok in 3s")
    board.close()
    assert said == ["[1/2] a: building on n1",
                    "[1/2] a: waiting on n1 (a benchmark has this node)", "[1/2] a: ok in 3s"]


def test_board_live_redraws_in_place():
    out = io.StringIO()
    board = Board({"a": "[1/2] a", "b": "[2/2] bbbb"}, print, live=True, stream=out)
    board.update("a", state="evaluating", node="host/abc123")
    board.marker("a", "progress", "lm-eval arc_easy 40/200 (12 s)")
    board.say("a message")
    board.update("a", state="ok")
    board.close()
    text = out.getvalue()
    assert "\x1b[2A\r\x1b[J" in text  # up over the two lines, erase, draw again
    assert text.count("a message") == 1
    last = text.rsplit("\x1b[J", 1)[1].splitlines()
    assert last[0].startswith("[1/2] a     ok") and "on host/abc123" in last[0]
    assert last[1].startswith("[2/2] bbbb  queued")  # one column per field, whatever the names
    assert "arc_easy 40/200" in text


def test_watching_reads_every_marker_as_it_arrives(tmp_path):
    log = tmp_path / "w.log"
    seen = []
    with watching(log, lambda kind, text: seen.append((time.time(), kind, text)), every_s=0.05):
        time.sleep(0.2)  # no file yet
        with open(log, "w") as fh:
            fh.write("noise\n[optkit] phase building\n")
            fh.flush()
            time.sleep(0.4)
            fh.write("[optkit] progress calibration 1/2 (0 s)\n[optkit] phase evalua")
            fh.flush()
            time.sleep(0.2)
            fh.write("ting")  # the last line, without a newline, written just before the end
    assert [s[1:] for s in seen] == [("phase", "building"), ("progress", "calibration 1/2 (0 s)"),
                                     ("phase", "evaluating")]
    assert seen[1][0] - seen[0][0] > 0.25, "markers arrive while the block runs, not at its end"


def _hold(lock, events, name, seconds):
    with lock():
        events.append((name, "in", time.time()))
        time.sleep(seconds)
        events.append((name, "out", time.time()))


def test_node_lock_a_benchmark_waits_for_builds_and_new_builds_wait_for_it(tmp_path, monkeypatch):
    monkeypatch.setenv(nodelock.ENV, str(tmp_path / "node"))
    events = []
    build = threading.Thread(target=_hold, args=(nodelock.shared, events, "build1", 0.6))
    bench = threading.Thread(target=_hold, args=(nodelock.exclusive, events, "bench", 0.4))
    later = threading.Thread(target=_hold, args=(nodelock.shared, events, "build2", 0.1))
    build.start()
    time.sleep(0.2)
    bench.start()
    time.sleep(0.2)
    later.start()  # arrives while the benchmark waits: must not jump ahead of it
    for t in (build, bench, later):
        t.join(10)
    order = [(name, what) for name, what, _ in events]
    assert order == [("build1", "in"), ("build1", "out"), ("bench", "in"), ("bench", "out"), ("build2", "in"),
                     ("build2", "out")]


def test_node_lock_is_released_when_its_holder_is_killed(tmp_path, monkeypatch):
    monkeypatch.setenv(nodelock.ENV, str(tmp_path / "node"))
    code = ("import time; from optkit.executors import nodelock\n"
            "with nodelock.exclusive():\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    monkeypatch.setenv(nodelock.THREADS_ENV, "3")
    with nodelock.exclusive() as threads:  # at once: the kernel dropped the dead process's lock
        assert threads == 3


def test_node_lock_is_a_no_op_under_the_local_executor(monkeypatch):
    monkeypatch.delenv(nodelock.ENV, raising=False)
    with nodelock.exclusive() as threads, nodelock.shared():
        assert threads is None


FAKE_SMI = """#!/bin/sh
echo "0, GPU-aaa, NVIDIA A10G, 550.54.15"
echo "1, GPU-bbb, NVIDIA H100 80GB HBM3, 550.54.15"
"""


def test_gpu_facts_and_hardware_class_from_nvidia_smi(tmp_path, monkeypatch):
    (tmp_path / "nvidia-smi").write_text(FAKE_SMI)
    (tmp_path / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv(node.CLASS_ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # what Ray sets for a task holding one GPU
    rec = node.facts("cuda")
    assert (rec.gpu_model, rec.gpu_count, rec.gpu_driver) == ("NVIDIA H100 80GB HBM3", 1, "550.54.15")
    assert rec.hardware_class == "1x NVIDIA H100 80GB HBM3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaa,1")
    assert node.facts("cuda").hardware_class == "2x NVIDIA A10G + NVIDIA H100 80GB HBM3"
    assert node.facts("cpu", threads=3).hardware_class.endswith(", 3 threads")  # no GPU looked up on cpu
    monkeypatch.setenv(node.CLASS_ENV, "a100-nodes")
    assert node.facts("cuda").hardware_class == "a100-nodes"


def _job(name: str, device: str, folder=None, key=None, nodes=None):
    """A placed job of a variant with no steps (nothing in these tests runs it)."""
    from pathlib import Path

    from optkit.job import VariantJob

    job = VariantJob.model_validate({"variant": {"name": name},
                                     "checkpoint": {"given": "m", "location": "m", "kind": "folder"},
                                     "model": {"checkpoint": "m"}, "device": device})
    folder = Path(folder or "/nonexistent")
    return job.placed(folder / f"{name}.json", folder / f"{name}.log", key, nodes)


def test_ray_task_options_hold_whole_gpus_and_pin_class_baselines(monkeypatch):
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'optkit[ray]'")
    from optkit.executors.base import Executor
    from optkit.executors.ray import RayExecutor
    from optkit.recipe import ExecutorSpec

    ex = RayExecutor(ExecutorSpec(kind="ray", gpus=2, cpus=4))
    assert isinstance(ex, Executor)
    job = _job("v", "cuda")
    opts = ex._options(job)
    assert opts["num_gpus"] == 2 and isinstance(opts["num_gpus"], int) and opts["num_cpus"] == 4
    assert opts["max_retries"] == 0 and opts["scheduling_strategy"] == "SPREAD" and opts["name"] == "optkit:v"
    assert "num_gpus" not in ex._options(_job("v", "cpu"))
    monkeypatch.setattr(ex, "_nodes", lambda: [{"NodeID": "b" * 56, "Alive": True}])
    pinned = ex._options(_job("v", "cuda", key="v@x", nodes=["a" * 56, "b" * 56]))
    assert pinned["scheduling_strategy"].node_id == "b" * 56 and pinned["scheduling_strategy"].soft is False
    assert ex._options(_job("v", "cuda", key="v@x", nodes=["a" * 56])) is None  # no live node of that class


def test_local_executor_retries_a_crashed_worker_only(tmp_path, monkeypatch):
    from optkit.executors import local

    results = iter([VariantResult(name="v", status="failed", error="worker killed by signal 9", crashed=True),
                    VariantResult(name="v", status="ok"),
                    VariantResult(name="w", status="failed", error="ValueError: bad")])
    monkeypatch.setattr(local, "run_job", lambda job, out, log, **_: next(results))
    said = []
    jobs = [_job(n, "cpu", folder=tmp_path) for n in ("v", "w")]
    jobs.append(_job("x", "cpu", folder=tmp_path, key="x@other", nodes=["n1"]))  # another class: not run here
    board = Board({"v": "v", "w": "w", "x@other": "x"}, said.append)
    done = list(local.LocalExecutor(retries=1).run_all(jobs, board))
    assert [(j.variant.name, c.name, c.status, c.attempts) for j, c in done] == [("v", "v", "ok", 2),
                                                                                  ("w", "w", "failed", 1)]
    assert [board.lines[k].state for k in ("v", "w", "x@other")] == ["ok", "failed", "queued"]
    assert "v: worker killed by signal 9; trying again" in said
    assert VariantResult.model_validate_json((tmp_path / "v.json").read_text()).attempts == 2


def _stats(median: float) -> Stats:
    return Stats(median=median, p10=median * 0.9, p90=median * 1.1, n=5)


def _cand(name: str, tps: float, cls: str, ppl: float | None = None) -> VariantResult:
    from optkit.results import EvalResult

    acc = [EvalResult(task="wikitext", metric="token_perplexity", value=ppl, n=100, higher_is_better=False)] \
        if ppl else []
    bench = BenchResult(prefill_ms=_stats(10), decode_tokens_per_s=_stats(tps), energy=Energy(status="unavailable"),
                        prompt_len=8, gen_len=4, size_mb=10)
    return VariantResult(name=name, status="ok", accuracy=acc, bench=bench,
                     node=NodeRecord(host=cls.lower(), hardware_class=cls))


def _report(variants, class_baselines=()):
    from optkit.environment import Environment

    return Report(run="r", created="now", checkpoint="m", environment=Environment(optkit="0", python="3", device="cpu"),
                  baseline="base", variants=variants, class_baselines=list(class_baselines),
                  recipe={"gates": {"max_ppl_increase": 0.05}})


def test_speedups_against_the_baseline_of_the_same_hardware_class():
    from optkit.gate import evaluate
    from optkit.recipe import GateSpec
    from optkit.report.analysis import rows
    from optkit.report.summary import markdown, text_table
    from optkit.report.wording import recommend

    # "fast" ran on a node twice as fast: 150 tok/s there is slower than the baseline's 200 on that class
    variants = [_cand("base", 100, "Slow", 10.0), _cand("fast", 150, "Quick", 10.1), _cand("ok", 120, "Slow", 10.2)]
    report = _report(variants, [_cand("base", 200, "Quick")])
    speed = {r.name: r.speedup for r in rows(report)}
    assert speed == pytest.approx({"base": 1.0, "fast": 0.75, "ok": 1.2})
    assert recommend(report)[0].startswith("Ship ok: 1.20x decode speed")
    verdicts = {v.variant: v.passed for v in evaluate(report, GateSpec(min_speedup=1.1), strict=True)}
    assert verdicts == {"fast": False, "ok": True}
    table = text_table(report)
    assert table.splitlines()[0].split()[:3] == ["variant", "status", "hardware"]
    assert "  B  Quick: fast (baseline base: 200.0 tok/s on quick)" in table
    assert "| hardware |" in markdown(report)
    no_base = _report(variants)  # no baseline benchmarked on Quick: no speed-up there, rather than a wrong one
    assert {r.name: r.speedup for r in rows(no_base)}["fast"] is None
    assert "no baseline benchmarked here" in text_table(no_base)
    one_class = _report([_cand("base", 100, "Slow", 10.0), _cand("ok", 120, "Slow", 10.2)])
    assert "hardware" not in text_table(one_class).splitlines()[0]


@pytest.mark.parametrize("args, message", [
    (["--executor", "ray", "--address", "127.0.0.1:9"], "no Ray cluster answers at 127.0.0.1:9"),
    (["--address", "127.0.0.1:9"], "--address is for the ray executor; add --executor ray"),
    (["--executor", "slurm"], "Invalid value for '--executor'"),
])
def test_executor_bad_input_exits_2_before_any_model_loads(tmp_path, args, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nmodel: {{checkpoint: {tmp_path / 'no-model'}}}\nvariants: [{{name: a}}]\n")
    result = optkit_cli("run", str(recipe), "--out", str(tmp_path / "run"), *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_ray_missing_is_one_line_naming_the_pip_command(tmp_path):
    fake = tmp_path / "fake" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: {checkpoint: m}\nvariants: [{name: a}]\nexecutor: {kind: ray}\n")
    result = optkit_cli("run", str(recipe), env={"PYTHONPATH": str(tmp_path / "fake")})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["optkit: error: the ray executor needs Ray: pip install "
                                                  "'optkit[ray]' (or use --executor local)"]
    recipe.write_text("name: r\nmodel: {checkpoint: m}\nvariants: [{name: a}]\nexecutor: {kind: slurm}\n")
    result = optkit_cli("run", str(recipe))
    assert result.returncode == 2 and "executor.kind" in result.stderr
