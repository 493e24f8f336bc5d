"""Run by test_vllm.py inside the vLLM environment (its interpreter, optkit on PYTHONPATH): loads each tiny model
in vLLM through optkit's engine (float32, eager) and writes what the LoadedModel members return, for the test to
compare with PyTorch's own numbers in optkit's environment. One process for every model: vLLM's start is the
cost (imports alone take ~30 s on 2 busy cores)."""

import json
import sys


def probe(folder: str, ask: dict) -> dict:
    import torch

    from optkit.bench import run_bench
    from optkit.checkpoints import Checkpoint
    from optkit.engines.vllm.engine import VllmEngine
    from optkit.evaluators import perplexity
    from optkit.recipe import BenchSpec, PerplexitySpec

    lm = VllmEngine().load(Checkpoint(folder, "folder", folder, "hf"), "float32")
    ids = ask["ids"]
    out = {"startup": lm.startup_seconds, "params": lm.params, "prefix": lm.prefix, "format": lm.format,
           "encoded": lm.encode(ask["text"]), "token_logprobs": lm.token_logprobs(ids)}
    values, index = lm.top_logprobs(ids, 5)
    out["top_values"], out["top_index"] = values.tolist(), index.tolist()
    at, top1 = lm.logprobs_at(ids, torch.tensor(ask["index"]))
    out["at"] = [[None if v != v else v for v in row] for row in at.tolist()]  # NaN -> null
    out["top1"] = top1.tolist()
    out["loglikelihoods"] = lm.loglikelihoods([tuple(p) for p in ask["pairs"]])
    out["generated"] = lm.generate_greedy([(ids[:8], 6, [])])[0]
    lm.expect_decode(5)
    logits, past = lm.start(torch.tensor([ids[:8], ids[4:12]]))
    rows = [logits.argmax(-1)]
    for _ in range(5):
        logits, past = lm.step(rows[-1][:, None], past)
        rows.append(logits.argmax(-1))
    out["stepped"] = torch.stack(rows, dim=1).tolist()
    spec = PerplexitySpec(path=ask["text_file"], max_tokens=200, window=64, stride=32)
    out["perplexity"] = perplexity.evaluate(lm, spec)[0].value
    bench = run_bench(lm, BenchSpec(prompt_len=16, gen_len=4, warmup=0, repeats=1, max_repeats=1, min_seconds=0,
                                    batch_sizes=[1, 2], roofline=False, paired_rounds=0))
    out["bench"] = {"decode": bench.decode_tokens_per_s.median, "prefill_ms": bench.prefill_ms.median,
                    "batches": [p.batch_size for p in bench.throughput], "memory_source": bench.peak_memory_source,
                    "peak_mb": bench.peak_memory_mb}
    lm.llm.llm_engine.engine_core.shutdown()  # before the next model's engine starts
    return out


if __name__ == "__main__":
    ask = json.loads(open(sys.argv[1]).read())
    result = {name: probe(folder, ask[name]) for name, folder in ask["models"].items()}
    with open(sys.argv[2], "w") as fh:
        json.dump(result, fh)
