"""An online serving run of one model in vLLM: its OpenAI-compatible server on 127.0.0.1 and vLLM's own client
(`vllm bench serve`, random prompts, ignore_eos) sweeping concurrency, each point bounded in requests and time;
prints TTFT / TPOT / ITL percentiles and throughput per concurrency, and the server's start-up apart.

Run under the vLLM environment's interpreter (make setup-vllm), with this clone on PYTHONPATH:
  VENV=$(python3 -m optkit.envs path vllm) && PYTHONPATH=. OPTKIT_CACHE=/tmp/optkit-cache \
    $VENV/bin/python benchmarks/vllm_serve.py FOLDER --dtype bfloat16 --concurrency 1,4,16 --requests 32
FOLDER: an HF or compressed-tensors folder (e.g. `optkit quantize ... -o DIR`'s DIR); a .gguf file is converted to
a safetensors folder first (cached). The smollm2-135m alias needs its model package, which lives in optkit's
environment, not vLLM's: pass its converted folder (OPTKIT_CACHE/gguf/<hash>-tf<version>-c2) instead. The same
sweep runs inside `optkit run` when a recipe sets bench.serving. Speeds on a shared machine are rough.
"""

from __future__ import annotations

import argparse
import sys

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
    from optkit.errors import BadInput
    from optkit.report.speed import serving_text

    try:
        folder = hf_folder(checkpoints.resolve(args.model)).location
    except BadInput as exc:
        print(f"vllm_serve: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    run = sweep(folder, args.dtype, [int(c) for c in args.concurrency.split(",")], args.requests, args.prompt_len,
                args.gen_len)
    print("\n".join(serving_text(run)))
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(run.model_dump_json(indent=1))
