"""An online serving run: vLLM's OpenAI-compatible server on localhost and vLLM's own client (`vllm bench serve`)
sweeping the number of concurrent requests, bounded in requests and time; TTFT / TPOT / ITL percentiles and
throughput as `vllm bench serve` reports them, one point per concurrency. Runs in the vLLM environment
(benchmarks/vllm_serve.py drives it); the server only ever listens on 127.0.0.1.

Not part of a variant's worker: the server holds its own model and KV cache, and beside the worker's engine it
would double the memory and share the cores. Its start-up is timed apart from the steady state, like LLM()'s.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PERCENTILES = "50,90,99"


@dataclass
class ServingPoint:
    concurrency: int
    requests: int
    completed: int
    seconds: float
    request_throughput: float
    output_throughput: float  # generated tokens/s over all requests
    ttft_ms: dict[str, float] = field(default_factory=dict)  # mean, p50, p90, p99
    tpot_ms: dict[str, float] = field(default_factory=dict)
    itl_ms: dict[str, float] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _pick(result: dict, metric: str) -> dict[str, float]:
    out = {"mean": result.get(f"mean_{metric}_ms")}
    out |= {f"p{p}": result.get(f"p{p}_{metric}_ms") for p in PERCENTILES.split(",")}
    return {k: round(v, 3) for k, v in out.items() if isinstance(v, (int, float))}


def sweep(folder: str, dtype: str, concurrencies: list[int], requests: int, prompt_len: int, gen_len: int,
          start_timeout: float = 900, run_timeout: float = 600, log=sys.stderr) -> tuple[dict, list[ServingPoint]]:
    """({"startup_s": ...}, one ServingPoint per concurrency). Every request is bounded (gen_len tokens, ignore_eos),
    every client run by run_timeout, the server by start_timeout; the server is stopped whatever happens."""
    from optkit.engines.vllm.runtime import prepare_environment

    prepare_environment()
    port = _free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", folder, "--host", "127.0.0.1", "--port",
           str(port), "--dtype", dtype, "--max-model-len", str(prompt_len + gen_len + 16), "--seed", "0"]
    if os.environ.get("OPTKIT_VLLM_EAGER", "") not in ("", "0"):
        cmd.append("--enforce-eager")
    started = time.perf_counter()
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    points = []
    try:
        while not _healthy(port):
            if server.poll() is not None or time.perf_counter() - started > start_timeout:
                raise RuntimeError(f"the vLLM server did not come up (exit {server.poll()}) within {start_timeout}s")
            time.sleep(1)
        startup = {"startup_s": round(time.perf_counter() - started, 2)}
        with tempfile.TemporaryDirectory(prefix="optkit-serve-") as tmp:
            for conc in concurrencies:
                name = f"c{conc}.json"
                subprocess.run([sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "serve", "--backend",
                                "vllm", "--base-url", f"http://127.0.0.1:{port}", "--model", folder,
                                "--dataset-name", "random", "--random-input-len", str(prompt_len),
                                "--random-output-len", str(gen_len), "--ignore-eos", "--num-prompts", str(requests),
                                "--max-concurrency", str(conc), "--percentile-metrics", "ttft,tpot,itl",
                                "--metric-percentiles", PERCENTILES, "--save-result", "--result-dir", tmp,
                                "--result-filename", name, "--disable-tqdm", "--seed", "0"],
                               stdout=log, stderr=subprocess.STDOUT, timeout=run_timeout, check=True)
                r = json.loads((Path(tmp) / name).read_text())
                points.append(ServingPoint(
                    concurrency=conc, requests=requests, completed=int(r.get("completed", 0)),
                    seconds=float(r.get("duration", 0.0)), request_throughput=float(r.get("request_throughput", 0)),
                    output_throughput=float(r.get("output_throughput", 0)), ttft_ms=_pick(r, "ttft"),
                    tpot_ms=_pick(r, "tpot"), itl_ms=_pick(r, "itl")))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return startup, points
