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
A GGUF alias or file is converted to a safetensors folder first (cached). Speeds on a shared machine are rough:
compare the two columns of one run, not runs with each other.
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
    args = ap.parse_args()

    from optkit import checkpoints, registry
    from optkit.meters.decode import Samples, one_rep, prompts
    from optkit.meters.energy import EnergyCounter

    ckpt = checkpoints.resolve(args.model)
    lm = registry.engines.get("vllm").load(ckpt, args.dtype)
    print(f"vLLM start-up: {lm.startup_seconds}")
    energy = EnergyCounter("cpu")
    for batch in [int(b) for b in args.batches.split(",")]:
        ids = prompts(lm, batch, args.prompt_len)
        lm.expect_decode(args.gen_len)
        one_rep(lm, ids, args.gen_len, energy, Samples())  # warm-up, both sides
        bare(lm.llm, ids.tolist(), args.gen_len)
        ours, theirs = Samples(), []
        for i in range(args.rounds):  # alternate, order swapped every round
            first, second = (0, 1) if i % 2 == 0 else (1, 0)
            for side in (first, second):
                if side == 0:
                    one_rep(lm, ids, args.gen_len, energy, ours)
                else:
                    theirs.append(bare(lm.llm, ids.tolist(), args.gen_len))
        o_tps, b_tps = statistics.median(ours.tps), statistics.median(t for _, t in theirs)
        o_ttft, b_ttft = statistics.median(ours.prefill_ms), statistics.median(t for t, _ in theirs)
        print(f"batch {batch:>3}: decode tok/s optkit {o_tps:8.2f}  bare {b_tps:8.2f}  ratio {o_tps / b_tps:.3f}   "
              f"TTFT ms optkit {o_ttft:8.1f}  bare {b_ttft:8.1f}  ratio {o_ttft / b_ttft:.3f}   ({args.rounds} rounds)")


if __name__ == "__main__":
    main()
