"""The whole chain on the tiny model through the CLI: report files, a crashing variant, resume after a kill,
and preflight refusals (exit 2) before any variant runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import optkit_cli

RECIPE = """\
name: tiny
model:
  checkpoint: {model}
variants:
  - name: base
  - name: bf16
    steps:
      - method: cast
        params: {{dtype: bfloat16}}
{extra}
eval:
  perplexity:
    path: {text}
    max_tokens: 200
    window: 64
    stride: 32
bench:
  prompt_len: 16
  gen_len: 4
  warmup: 1
  repeats: 2
  max_repeats: 2  # no extra repeats while the suite's other worker keeps the cores busy
  min_seconds: 0  # speeds are not what these tests check
gates:
  max_ppl_increase: 50%
"""
INT8 = """\
  - name: int8
    steps:
      - method: torchao.int8_weight_only
"""
SLOW = """\
  - name: hangs
    timeout_s: 0.5
"""


def recipe(tmp_path, tiny_model, text_file, extra="", name="r.yaml"):
    path = tmp_path / name
    path.write_text(RECIPE.format(model=tiny_model, text=text_file, extra=extra))
    return path


def test_run_writes_reports_and_records_a_crash(tmp_path, tiny_model, text_file):
    path = recipe(tmp_path, tiny_model, text_file, extra=SLOW + INT8)
    out = tmp_path / "run"
    result = optkit_cli("run", str(path), "--out", str(out), env={"OPTKIT_TEST_FAULTS": "hangs=hang"})
    assert result.returncode == 3, result.stderr[-2000:]  # a run error, reported after the report is written
    assert "1 variant(s) failed: hangs" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["base", "bf16", "hangs", "int8"]
    status = {v["name"]: v for v in report["variants"]}
    assert status["hangs"]["status"] == "failed" and "timed out" in status["hangs"]["error"]
    for name in ("base", "bf16", "int8"):
        v = status[name]
        assert v["status"] == "ok", v.get("error")
        assert v["accuracy"][0]["metric"] == "token_perplexity" and v["accuracy"][0]["stderr"] > 0
        assert set(v["bench"]["decode_tokens_per_s"]) >= {"median", "p10", "p90", "n"}
        assert v["bench"]["energy"]["status"] in ("ok", "unavailable")
    assert status["int8"]["steps"][0]["modules_changed"]
    paired = status["int8"]["bench"]["paired"]  # timed against the baseline in alternating rounds, in its process
    assert paired["baseline"] == "base" and paired["rounds"] == 4 and paired["decode_speedup"]["median"] > 0
    assert status["base"]["bench"]["paired"] is None
    assert report["environment"]["torch"] and report["baseline"] == "base"
    html = (out / "report.html").read_text()
    assert 'id="chart"' in html and 'id="recommendation"' in html and "hangs" in html
    gate = optkit_cli("gate", str(out))
    assert gate.returncode == 1 and "FAIL hangs" in gate.stdout  # a failed variant never passes a gate
    md = optkit_cli("report", str(out), "--format", "md")
    assert md.returncode == 0 and "| int8" in md.stdout


def test_killed_run_resumes_without_redoing_finished_variants(tmp_path, tiny_model, text_file):
    path = recipe(tmp_path, tiny_model, text_file, extra=INT8)
    # no paired rounds: speed-ups come from separate runs, so the baseline is benchmarked again at the end
    path.write_text(path.read_text().replace("  repeats: 2\n", "  repeats: 2\n  paired_rounds: 0\n"))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "optkit", "run", str(path), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = out / "variants" / "base.json"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # the orchestrator only: its worker must not outlive it
    proc.wait()
    assert first.exists(), "the first variant should have been written before the kill"
    assert not (out / "report.json").exists()
    end = time.time() + 30
    while _workers(out) and time.time() < end:
        time.sleep(0.2)
    assert not _workers(out), "a worker outlived its killed orchestrator"
    stamp = first.stat().st_mtime_ns
    result = optkit_cli("run", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "base: already done" in result.stderr
    assert first.stat().st_mtime_ns == stamp
    assert not [p.name for p in (out / "variants").iterdir() if p.name.startswith(".")]  # nothing stale left
    report = json.loads((out / "report.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["base", "bf16", "int8"]
    again = report["baseline_again"]
    assert again["name"] == "base" and again["bench"]["decode_tokens_per_s"]["median"] > 0 and not again["accuracy"]
    stamp = (out / "baselines" / "again.json").stat().st_mtime_ns
    assert optkit_cli("run", str(path), "--out", str(out)).returncode == 0
    assert (out / "baselines" / "again.json").stat().st_mtime_ns == stamp  # resumed like the variants


def _workers(run_dir) -> list[int]:
    """Worker processes working for run_dir: their output goes to a log in it (a worker forked from the warm server
    has that server's command line, not `optkit.worker`)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            out = os.readlink(proc / "fd" / "1")
        except (OSError, ValueError):
            continue
        if out.startswith(str(run_dir / "logs")):
            pids.append(int(proc.name))
    return pids


@pytest.mark.parametrize("extra, message", [
    ("  - name: x\n    steps:\n      - method: torchao.int8_weight_onyl\n", "did you mean 'torchao.int8_weight_only'"),
    ("  - name: x\n    steps:\n      - method: torchao.int4_weight_only\n        params: {group_size: 32}\n",
     "needs a bfloat16 model"),
    ("  - name: x\n    steps:\n      - method: cast\n        params: {dtype: bfloat16}\n"
     "      - method: torch.dynamic_int8\n", "needs a float32 model"),
    ("  - name: x\n    steps:\n      - method: cast\n        params: {dtype: bf16}\n", "params.dtype"),
    ("  - name: x\n    steps:\n      - method: onnx.export\n        auto_exclude: {max_ppl_increase: 5%}\n",
     "does not support auto_exclude"),
])
def test_preflight_refuses_before_running(tmp_path, tiny_model, text_file, extra, message):
    path = recipe(tmp_path, tiny_model, text_file, extra=extra)
    result = optkit_cli("run", str(path), "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr[-1000:]
    error = [ln for ln in result.stderr.splitlines() if ln.startswith("optkit: error")]
    assert len(error) == 1 and message in error[0] and "variants[2] (x)" in error[0]
    assert not (tmp_path / "run" / "variants").exists()


def test_missing_checkpoint_and_cuda_are_bad_input(tmp_path, text_file):
    path = recipe(tmp_path, tmp_path / "no-such-model", text_file)
    result = optkit_cli("run", str(path))
    assert result.returncode == 2 and "checkpoint not found" in result.stderr
    path.write_text(path.read_text().replace("variants:", "device: cuda\nvariants:"))
    result = optkit_cli("run", str(path))
    import torch

    if not torch.cuda.is_available():
        assert result.returncode == 2 and "no CUDA GPU is visible" in result.stderr


def test_quantize_writes_an_artifact_that_eval_accepts(tmp_path, tiny_model, text_file):
    art = tmp_path / "art"
    q = optkit_cli("quantize", str(tiny_model), "torchao.int8_weight_only", "-p", "exclude=[lm_head]", "-o", str(art))
    assert q.returncode == 0, q.stderr[-2000:]
    manifest = json.loads((art / "optkit.json").read_text())
    assert manifest["steps"][0]["method"] == "torchao.int8_weight_only"
    assert manifest["records"][0]["modules_skipped"][0]["module"] == "lm_head"
    e = optkit_cli("eval", str(art), "--text", str(text_file), "--max-tokens", "100", "-o", str(tmp_path / "ev"))
    assert e.returncode == 0, e.stderr[-2000:]
    [variant] = json.loads((tmp_path / "ev" / "report.json").read_text())["variants"]
    assert variant["status"] == "ok" and variant["accuracy"][0]["value"] > 1
