"""The ray executor on a two-node Ray cluster (tests/conftest.py ray_cluster, both nodes on this machine):
the same results as the local executor, benchmarks that never share a node, speed-ups within a hardware class,
a killed worker that costs only its variant (or is retried), and a killed driver whose rerun resumes."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import optkit_cli

pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'optkit[ray]'")

RECIPE = """\
name: tiny
model: {{checkpoint: {model}}}
variants:
  - name: base
  - name: bf16
    steps: [{{method: cast, params: {{dtype: bfloat16}}}}]
  - name: pruned
    steps: [{{method: prune.magnitude, params: {{sparsity: 0.5}}}}]
{extra}
eval:
  perplexity: {{path: {text}, max_tokens: 200, window: 64, stride: 32}}
  fidelity: {fidelity}
  cache: false
bench: {bench}
"""
FIDELITY = "{{samples: 2, seq_len: 16, path: {text}}}"
BENCH = ("{prompt_len: 8, gen_len: 4, warmup: 0, repeats: 2, max_repeats: 3, min_seconds: 0.3, roofline: false, "
         "paired_rounds: 0}")  # speed-ups from separate runs: the ones a hardware class must keep apart


def recipe(folder: Path, model, text, extra="", fidelity=True, bench="null") -> Path:
    path = folder / "r.yaml"
    path.write_text(RECIPE.format(model=model, text=text, extra=extra, bench=bench,
                                  fidelity=FIDELITY.format(text=text) if fidelity else "null"))
    return path


def run(path: Path, out: Path, kind="ray", retries=0, said=None):
    """pipeline.run as the CLI calls it, in this process (connected to the test cluster)."""
    from optkit import executors, pipeline
    from optkit.recipe import ExecutorSpec, load_recipe

    r = load_recipe(path)
    executor = executors.create(ExecutorSpec(kind=kind, retries=retries))
    try:
        plan = pipeline.plan(r, str(path), device=executor.device(r.device))
        return pipeline.run(plan, out, say=(said if said is not None else []).append, executor=executor)
    finally:
        executor.close()


def accuracy(report):
    return {c.name: [(a.task, a.metric, a.value, a.stderr) for a in c.accuracy] for c in report.variants}


def test_same_variants_statuses_and_accuracy_as_the_local_executor(ray_cluster, tmp_path, tiny_model, text_file,
                                                                   monkeypatch):
    monkeypatch.setenv("OPTKIT_TEST_FAULTS", "hangs=hang")  # a tiny variant can finish inside any time limit
    path = recipe(tmp_path, tiny_model, text_file, extra="  - name: hangs\n    timeout_s: 0.5\n")
    local = run(path, tmp_path / "local", kind="local")
    remote = run(path, tmp_path / "ray")
    assert [(c.name, c.status) for c in remote.variants] == [(c.name, c.status) for c in local.variants] == [
        ("base", "ok"), ("bf16", "ok"), ("pruned", "ok"), ("hangs", "failed")]
    assert accuracy(remote) == accuracy(local)  # bit-equal floats: perplexity and fidelity
    assert any(a.metric == "kl_mean" for a in remote.variants[1].accuracy), "the reference reached the others"
    assert "timed out" in remote.variants[3].error and not remote.variants[3].crashed
    run_dir = tmp_path / "ray"
    assert len(list((run_dir / "reference").iterdir())) == 1  # kept for a resume
    for c in remote.variants:
        assert json.loads((run_dir / "variants" / f"{c.name}.json").read_text())["status"] == c.status
        assert c.node.node_id and c.node.host
    assert "[optkit] phase evaluating" in (run_dir / "logs" / "bf16.log").read_text()
    assert json.loads((run_dir / "report.json").read_text())["variants"][2]["node"]["node_id"]


@pytest.fixture(scope="module")
def bench_run(ray_cluster, tmp_path_factory, tiny_model, text_file):
    """Four variants with a benchmark and no fidelity, so all four start at once, two on each node."""
    folder = tmp_path_factory.mktemp("bench")
    extra = "  - name: pruned2\n    steps: [{method: prune.magnitude, params: {sparsity: 0.25}}]\n"
    said: list[str] = []
    report = run(recipe(folder, tiny_model, text_file, extra=extra, fidelity=False, bench=BENCH),
                 folder / "run", said=said)
    return report, said


def _overlap(a, b) -> bool:
    return a.start < b.end and b.start < a.end


def test_a_benchmark_has_its_node_to_itself(bench_run):
    report, _ = bench_run
    assert all(c.status == "ok" for c in report.variants), [c.error for c in report.variants]
    by_node = defaultdict(list)
    for c in [*report.variants, *report.class_baselines]:
        by_node[c.node.node_id].append(c)
    assert len(by_node) == 2, "both nodes got variants"
    builds_shared = False
    for cands in by_node.values():
        for a in cands:
            bench = next(p for p in a.timeline if p.phase == "benchmarking")
            for b in cands:
                if b is a:
                    continue
                busy = [p for p in b.timeline if p.phase in ("building", "evaluating", "benchmarking")]
                assert not any(_overlap(bench, p) for p in busy), (a.name, b.name, a.timeline, b.timeline)
                builds_shared |= _overlap(a.timeline[0], b.timeline[0])
    assert builds_shared, "building is not exclusive: two variants built on one node at once"


def test_speedups_compare_within_a_hardware_class(bench_run):
    from optkit.report.analysis import rows
    from optkit.report.summary import text_table

    report, said = bench_run
    base = report.variants[0]
    classes = {c.node.hardware_class for c in report.variants}
    assert len(classes) == 2 and "other-node" in classes
    [again] = report.class_baselines  # the baseline benchmarked on the class it did not run on
    assert again.name == "base" and again.status == "ok" and again.accuracy == []
    assert {again.node.hardware_class, base.node.hardware_class} == classes
    ref = {c.node.hardware_class: c.bench.decode_tokens_per_s.median for c in (base, again)}
    for r, c in zip(rows(report), report.variants):
        assert r.speedup == pytest.approx(c.bench.decode_tokens_per_s.median / ref[c.node.hardware_class])
    table = text_table(report)
    assert "hardware" in table.splitlines()[0] and "Hardware classes" in table and "other-node" in table
    assert any(s.startswith("baseline base benchmarked on") for s in said)


def _worker_pids(variant: str) -> list[int]:
    """optkit.worker processes a Ray task started for `variant` (its node-local folder is optkit-<name>-*)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "optkit.worker" in cmd and f"/optkit-{variant}-" in cmd:
            pids.append(int(proc.name))
    return pids


def _wait_for_worker(variant: str, timeout=300) -> int:
    end = time.time() + timeout
    while time.time() < end:
        pids = _worker_pids(variant)
        if pids:
            return pids[0]
        time.sleep(0.05)
    raise TimeoutError(f"no worker process for {variant}")


@pytest.mark.parametrize("victim, retries", [("ray worker", 0), ("worker process", 1)])
def test_a_killed_worker_costs_only_its_variant(ray_cluster, tmp_path, tiny_model, text_file, victim, retries):
    path = recipe(tmp_path, tiny_model, text_file, fidelity=False)
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("report", run(path, tmp_path / "run", retries=retries)))
    thread.start()
    pid = _wait_for_worker("bf16")
    if victim == "ray worker":  # the Ray task's process; its worker dies with it
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(pid, signal.SIGKILL)
    thread.join(600)
    status = {c.name: c for c in box["report"].variants}
    assert status["base"].status == status["pruned"].status == "ok"
    killed = status["bf16"]
    if retries:
        assert killed.status == "ok" and killed.attempts == 2 and killed.accuracy
    else:
        assert killed.status == "failed" and killed.crashed and "WorkerCrashedError" in killed.error
        assert killed.node is not None and killed.node.node_id  # where it died
        saved = json.loads((tmp_path / "run" / "variants" / "bf16.json").read_text())
        assert saved["status"] == "failed" and saved["crashed"]


def test_a_killed_driver_is_resumed_by_a_rerun(ray_cluster, tmp_path, tiny_model, text_file):
    path = recipe(tmp_path, tiny_model, text_file)
    out = tmp_path / "run"
    args = ["run", str(path), "--out", str(out), "--executor", "ray", "--address", ray_cluster.address]
    driver = subprocess.Popen([sys.executable, "-m", "optkit", *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    first = out / "variants" / "base.json"
    end = time.time() + 300
    while not first.exists() and time.time() < end:
        time.sleep(0.1)
    _wait_for_worker("bf16", timeout=120)  # the others are running when the driver dies
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    stamp = first.stat().st_mtime_ns
    end = time.time() + 60
    while (_worker_pids("bf16") or _worker_pids("pruned")) and time.time() < end:
        time.sleep(0.2)
    assert not _worker_pids("bf16"), "Ray ends the tasks of a dead driver, and their workers with them"
    assert sorted(p.name for p in (out / "variants").glob("*.json")) == ["base.json"]
    result = optkit_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "base: already done" in result.stderr and first.stat().st_mtime_ns == stamp
    assert "[2/3] bf16: building on " in result.stderr  # the plain progress lines, stderr not being a terminal
    report = json.loads((out / "report.json").read_text())
    assert [(v["name"], v["status"]) for v in report["variants"]] == [("base", "ok"), ("bf16", "ok"),
                                                                       ("pruned", "ok")]
