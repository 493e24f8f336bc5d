"""An online serving run of one model in vLLM: its OpenAI-compatible server on 127.0.0.1 and vLLM's own client
(`vllm bench serve`, random prompts, ignore_eos) sweeping concurrency, each point bounded in requests and time;
prints TTFT / TPOT / ITL percentiles and throughput per concurrency, and the server's start-up apart.

Run under the vLLM environment's interpreter (make setup-vllm), with this clone on PYTHONPATH:
  VENV=$(python3 -m optkit.envs path vllm) && PYTHONPATH=. OPTKIT_CACHE=/tmp/optkit-cache \
    $VENV/bin/python benchmarks/vllm_serve.py FOLDER --dtype bfloat16 --concurrency 1,4,16 --requests 32
FOLDER: an HF or compressed-tensors folder (e.g. an llmc step's out_dir); a .gguf file or the smollm2-135m alias
is converted to a safetensors folder first (cached). Speeds on a shared machine are rough.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from optkit.engines.llamacpp.convert import hf_folder

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen-len", type=int, default=32)
    ap.add_argument("--json", help="write the points here too")
    args = ap.parse_args()

    from optkit import checkpoints
    from optkit.engines.vllm.serving import sweep

    folder = hf_folder(checkpoints.resolve(args.model)).location
    startup, points = sweep(folder, args.dtype, [int(c) for c in args.concurrency.split(",")], args.requests,
                            args.prompt_len, args.gen_len)
    print(f"server start-up {startup['startup_s']:.1f} s (apart from the steady state below)")
    print("conc  done  req/s   out tok/s  TTFT p50/p90/p99 ms       TPOT p50/p90/p99 ms")
    for p in points:
        t, o = p.ttft_ms, p.tpot_ms
        print(f"{p.concurrency:>4}  {p.completed:>4}  {p.request_throughput:6.2f}  {p.output_throughput:9.1f}  "
              f"{t.get('p50', 0):7.1f}/{t.get('p90', 0):7.1f}/{t.get('p99', 0):7.1f}  "
              f"{o.get('p50', 0):7.1f}/{o.get('p90', 0):7.1f}/{o.get('p99', 0):7.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"startup": startup, "points": [asdict(p) for p in points]}, fh, indent=1)
