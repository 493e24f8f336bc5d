"""The reference optkit's llama.cpp meter is checked against: llama-cpp-python's own high-level generate loop
(Llama.generate, greedy) on a GGUF file, with no optkit code: time to first token for a PROMPT-token prompt, then
batch-1 decode tokens/s over NEW new tokens, median of repeated runs (benchmarks/llamacpp_bare.py runs it, alone
or alternating with `optkit bench`)."""

from __future__ import annotations

import statistics
import time

PROMPT, NEW = 128, 64


def bare(path: str, threads: int, repeats: int) -> dict:
    import torch
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=1024, n_batch=512, n_threads=threads, n_threads_batch=threads,
                flash_attn=True, verbose=False)
    ids = torch.randint(3, llm.n_vocab(), (1, PROMPT), generator=torch.Generator().manual_seed(0))[0].tolist()
    ids[0] = llm.token_bos()
    prefill, decode = [], []
    for i in range(repeats + 1):  # the first run warms up
        llm.reset()
        started = time.perf_counter()
        stream = llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, reset=True)
        next(stream)  # prompt evaluated, first token sampled
        first = time.perf_counter()
        for _ in range(NEW):
            next(stream)
        done = time.perf_counter()
        stream.close()
        if i:
            prefill.append((first - started) * 1000)
            decode.append(NEW / (done - first))
    return {"decode_tokens_per_s": statistics.median(decode), "prefill_ms": statistics.median(prefill),
            "threads": threads, "runs": repeats}
