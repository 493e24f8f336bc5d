"""An online serving run: vLLM's OpenAI-compatible server on localhost and vLLM's own client (`vllm bench serve`)
sweeping the number of concurrent requests, bounded in requests and time; TTFT / TPOT / ITL percentiles and
throughput as `vllm bench serve` reports them, one point per concurrency. Runs in the vLLM environment: a variant's
worker runs it after the benchmark when the recipe asks (bench.serving; VllmLM.serve first stops the worker's own
engine, so the server has the memory and the cores to itself), benchmarks/vllm_serve.py on any folder. The server
only ever listens on 127.0.0.1. Its start-up is timed apart from the steady state, like LLM()'s.
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
from pathlib import Path

PERCENTILES = "50,90,99"
CLI = [sys.executable, "-m", "optkit.engines.vllm.cli"]  # vLLM's command line, as this environment can run it (cli.py)


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
          start_timeout: float = 900, run_timeout: float = 600, log=sys.stderr):
    """A ServingRun: the server's start-up and one point per concurrency. Every request is bounded (gen_len tokens,
    ignore_eos), every client run by run_timeout, the server by start_timeout; the server is stopped whatever
    happens. A point that fails ends the sweep, and the points before it are kept with the reason."""
    from optkit.engines.vllm.runtime import prepare_environment
    from optkit.results import ServingPoint, ServingRun

    prepare_environment()
    port = _free_port()
    cmd = [*CLI, "serve", folder, "--host", "127.0.0.1", "--port",
           str(port), "--dtype", dtype, "--max-model-len", str(prompt_len + gen_len + 16), "--seed", "0"]
    if os.environ.get("OPTKIT_VLLM_EAGER", "") not in ("", "0"):
        cmd.append("--enforce-eager")
    run = ServingRun(server="vllm serve; client: vllm bench serve (random prompts, ignore_eos)",
                     prompt_len=prompt_len, gen_len=gen_len)
    started = time.perf_counter()
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        while not _healthy(port):
            if server.poll() is not None or time.perf_counter() - started > start_timeout:
                run.note = f"the vLLM server did not come up (exit {server.poll()}) within {start_timeout:.0f} s"
                return run
            time.sleep(1)
        run.startup_seconds = round(time.perf_counter() - started, 2)
        with tempfile.TemporaryDirectory(prefix="optkit-serve-") as tmp:
            for conc in concurrencies:
                name = f"c{conc}.json"
                try:
                    subprocess.run([*CLI, "bench", "serve",
                                    "--backend", "vllm", "--base-url", f"http://127.0.0.1:{port}", "--model", folder,
                                    "--dataset-name", "random", "--random-input-len", str(prompt_len),
                                    "--random-output-len", str(gen_len), "--ignore-eos", "--num-prompts",
                                    str(requests), "--max-concurrency", str(conc), "--percentile-metrics",
                                    "ttft,tpot,itl", "--metric-percentiles", PERCENTILES, "--save-result",
                                    "--result-dir", tmp, "--result-filename", name, "--disable-tqdm", "--seed", "0"],
                                   stdout=log, stderr=subprocess.STDOUT, timeout=run_timeout, check=True)
                except subprocess.TimeoutExpired:
                    run.note = f"concurrency {conc}: the client ran past {run_timeout:.0f} s (serving.timeout_s)"
                    break
                except subprocess.CalledProcessError as exc:
                    run.note = f"concurrency {conc}: vllm bench serve exited {exc.returncode} (the log says why)"
                    break
                r = json.loads((Path(tmp) / name).read_text())
                run.points.append(ServingPoint(
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
    return run
