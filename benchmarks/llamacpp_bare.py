"""The reference for optkit's llama.cpp meter: llama-cpp-python's own high-level generate loop (Llama.generate,
greedy) on a GGUF file, with no optkit code: time to first token for a 128-token prompt, then batch-1 decode
tokens/s over 64 new tokens, median of repeated runs.

    python benchmarks/llamacpp_bare.py FILE.gguf [--threads 2] [--repeats 5]
    python benchmarks/llamacpp_bare.py FILE.gguf --against-optkit 4

The second form alternates, in fresh processes, this script and `optkit bench FILE --engine llamacpp` with the
same prompt length, new tokens and threads, ROUNDS times each, and prints both decode figures per round and
their ratio: on a shared machine only figures measured close together compare. Both sides use the settings
optkit's engine fixes (flash attention on, OpenMP's default wait policy) and the same prompt (optkit's bench:
torch.randint(3, vocab) with seed 0, BOS first).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from optkit.engines.llamacpp.bare import NEW, PROMPT, bare


def optkit_bench(path: str, threads: int, repeats: int) -> dict:
    """`optkit bench` in its own process (its CLI, as a user runs it): the batch-1 decode median it reports."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "optkit", "bench", path, "--engine", "llamacpp", "--prompt-len", str(PROMPT),
               "--gen-len", str(NEW), "--repeats", str(repeats), "--min-seconds", "0", "--threads", str(threads),
               "-o", out]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"optkit bench failed: {done.stderr[-2000:]}")
        bench = json.loads((Path(out) / "report.json").read_text())["variants"][0]["bench"]
    return {"decode_tokens_per_s": bench["decode_tokens_per_s"]["median"], "prefill_ms": bench["prefill_ms"]["median"],
            "threads": bench["threads"]}


def alternate(path: str, threads: int, repeats: int, rounds: int) -> None:
    ratios = []
    for i in range(rounds):
        pair = {}
        for side in (("bare", "optkit") if i % 2 == 0 else ("optkit", "bare")):  # order swapped every round
            if side == "bare":
                cmd = [sys.executable, __file__, path, "--threads", str(threads), "--repeats", str(repeats)]
                pair[side] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            else:
                pair[side] = optkit_bench(path, threads, repeats)
        ratio = pair["optkit"]["decode_tokens_per_s"] / pair["bare"]["decode_tokens_per_s"]
        ratios.append(ratio)
        print(f"round {i + 1}: bare {pair['bare']['decode_tokens_per_s']:.1f} tok/s (prefill "
              f"{pair['bare']['prefill_ms']:.0f} ms), optkit {pair['optkit']['decode_tokens_per_s']:.1f} tok/s "
              f"(prefill {pair['optkit']['prefill_ms']:.0f} ms), optkit/bare {ratio:.3f}", flush=True)
    print(f"optkit / bare decode: median {statistics.median(ratios):.3f} over {rounds} rounds "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--against-optkit", type=int, metavar="ROUNDS", default=0)
    args = ap.parse_args()
    if args.against_optkit:
        alternate(args.file, args.threads, args.repeats, args.against_optkit)
    else:
        print(json.dumps(bare(args.file, args.threads, args.repeats)))


if __name__ == "__main__":
    main()
