"""optkit's vLLM figures against a bare vLLM loop, in one window: same process, same LLM instance, alternating
rounds, so drift and other load hit both alike. Goal: optkit's decode tokens/s and time to first token within 5%
of the bare loop's.

optkit's side is its benchmark's own repetition (optkit.meters.decode.one_rep: start/step through vLLM's engine loop,
one-hot "logits" of vLLM's greedy tokens); the bare side is what a vLLM user writes: LLM.generate on token
prompts, greedy, ignore_eos, no detokenization; TTFT = a max_tokens=1 request, decode = (gen_len + 1 tokens) -
(1 token), per sequence.

Run it under the vLLM environment's interpreter (make setup-vllm), with this clone on PYTHONPATH:
  VENV=$(python3 -m optkit.envs path vllm) && PYTHONPATH=. OPTKIT_CACHE=/tmp/optkit-cache \
    $VENV/bin/python benchmarks/vllm_bare.py smollm2-135m --dtype bfloat16 --rounds 6 --batches 1,8
`--frontend-threads 1,2` adds one optkit column per torch thread count of this front-end process, where the
meter's argmax runs (vLLM computes in its engine-core process; on a quiet 2-core AMD EPYC, 1 and 2 threads gave
0.989 and 0.981 of the bare loop's batch-1 decode: no difference). A GGUF alias or file is converted to a
safetensors folder first (cached). Speeds on a shared machine are rough: compare the columns of one run, not runs
with each other.
"""

from __future__ import annotations

import argparse
import statistics
import time


def bare(llm, prompts: list[list[int]], gen_len: int) -> tuple[float, float]:
    """(TTFT ms, decode tokens/s over all sequences) of one bare round."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    reqs = [TokensPrompt(prompt_token_ids=p) for p in prompts]

    def timed(n: int) -> float:
        params = SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.0, detokenize=False)
        t0 = time.perf_counter()
        llm.generate(reqs, params, use_tqdm=False)
        return time.perf_counter() - t0

    first = timed(1)
    whole = timed(gen_len + 1)
    return first * 1000, len(prompts) * gen_len / max(whole - first, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="an HF / compressed-tensors folder, a .gguf file or an alias (smollm2-135m)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen-len", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--frontend-threads", default="",
                    help="comma-separated torch thread counts for this (the front-end) process, one optkit column "
                         "each, to time what the front-end's own threads cost vLLM's engine process; default: "
                         "torch's own count")
    args = ap.parse_args()

    import torch

    from optkit import checkpoints, registry
    from optkit.meters.decode import Samples, one_rep, prompts
    from optkit.meters.energy import EnergyCounter

    ckpt = checkpoints.resolve(args.model)
    lm = registry.engines.get("vllm").load(ckpt, args.dtype)
    print(f"vLLM start-up: {lm.startup_seconds}; front-end torch threads: {torch.get_num_threads()}")
    loaded = torch.get_num_threads()
    sides = [int(n) for n in args.frontend_threads.split(",") if n] or [loaded]
    energy = EnergyCounter("cpu")
    for batch in [int(b) for b in args.batches.split(",")]:
        ids = prompts(lm, batch, args.prompt_len)
        lm.expect_decode(args.gen_len)
        one_rep(lm, ids, args.gen_len, energy, Samples())  # warm-up, both sides
        bare(lm.llm, ids.tolist(), args.gen_len)
        ours, theirs = {n: Samples() for n in sides}, []
        for i in range(args.rounds):  # alternate, order rotated every round
            order = [*sides, None]
            for side in order[i % len(order):] + order[:i % len(order)]:
                if side is None:
                    theirs.append(bare(lm.llm, ids.tolist(), args.gen_len))
                    continue
                torch.set_num_threads(side)
                one_rep(lm, ids, args.gen_len, energy, ours[side])
                torch.set_num_threads(loaded)
        b_tps, b_ttft = statistics.median(t for _, t in theirs), statistics.median(t for t, _ in theirs)
        for n, s in ours.items():
            o_tps, o_ttft = statistics.median(s.tps), statistics.median(s.prefill_ms)
            print(f"batch {batch:>3}: decode tok/s optkit[{n} front-end threads] {o_tps:8.2f}  bare {b_tps:8.2f}  "
                  f"ratio {o_tps / b_tps:.3f}   TTFT ms optkit {o_ttft:8.1f}  bare {b_ttft:8.1f}  "
                  f"ratio {o_ttft / b_ttft:.3f}   ({args.rounds} rounds; others' CPU share during optkit's decode, "
                  f"median {statistics.median(x or 0.0 for x in s.decode_share):.0%})")


if __name__ == "__main__":
    main()
