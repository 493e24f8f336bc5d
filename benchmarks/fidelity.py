"""Does optkit's meter report what a bare timing loop sees? Runs both on the same model in one process,
interleaved, and prints their medians side by side (issue: optkit's medians must agree within 5%).

    OPTKIT_DATA=../shared/data .venv/bin/python benchmarks/fidelity.py [--checkpoint smollm2-135m] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time


def bare_loop(model, prompt, gen_len: int) -> tuple[float, float]:
    """Hand-written loop, nothing shared with optkit: (prefill ms, decode tokens/s) of one greedy generation
    with a KV cache, the way a user would time it (each prefill follows the previous generation's decode)."""
    import torch
    from transformers import DynamicCache

    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(input_ids=prompt, past_key_values=DynamicCache(), use_cache=True)
        token, past = out.logits[:, -1].argmax(-1, keepdim=True), out.past_key_values
        prefill = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        for _ in range(gen_len):
            out = model(input_ids=token, past_key_values=past, use_cache=True)
            token, past = out.logits[:, -1].argmax(-1, keepdim=True), out.past_key_values
        return prefill, gen_len / (time.perf_counter() - t0)


def main() -> None:
    import torch

    from optkit import checkpoints, loading
    from optkit.bench import run_bench
    from optkit.recipe import BenchSpec

    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen-len", type=int, default=64)
    args = ap.parse_args()
    lm = loading.load(checkpoints.resolve(args.checkpoint))
    prompt = torch.randint(3, lm.vocab_size, (1, args.prompt_len), generator=torch.Generator().manual_seed(0))
    spec = BenchSpec(prompt_len=args.prompt_len, gen_len=args.gen_len, warmup=1, repeats=5, max_repeats=5,
                     roofline=False)
    bare_loop(lm.model, prompt, args.gen_len)  # warm-up
    bare_d, bare_p, ok_d, ok_p = [], [], [], []
    for _ in range(args.rounds):  # interleave so drift of a shared machine hits both alike
        reps = [bare_loop(lm.model, prompt, args.gen_len) for _ in range(5)]
        bare_p.append(statistics.median(p for p, _ in reps))
        bare_d.append(statistics.median(d for _, d in reps))
        result = run_bench(lm, spec)
        ok_d.append(result.decode_tokens_per_s.median)
        ok_p.append(result.prefill_ms.median)
    for label, bare, ours in (("decode tokens/s", bare_d, ok_d), ("prefill ms", bare_p, ok_p)):
        b, o = statistics.median(bare), statistics.median(ours)
        # paired within each round: the machine's drift between rounds cancels out
        paired = statistics.median(x / y for x, y in zip(ours, bare)) - 1
        print(f"{label:16s} bare loop median {b:8.2f}   optkit median {o:8.2f}   difference {o / b - 1:+.1%}   "
              f"paired per round {paired:+.1%} (rounds: {', '.join(f'{x / y - 1:+.0%}' for x, y in zip(ours, bare))})")


if __name__ == "__main__":
    main()
