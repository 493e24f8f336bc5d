"""Run by test_vllm.py inside the vLLM environment (its interpreter, optkit on PYTHONPATH): loads each tiny model
in vLLM through optkit's engine (float32, eager) and writes what the LoadedModel members return, for the test to
compare with PyTorch's own numbers in optkit's environment. One process for every model: vLLM's start is the
cost (imports alone take ~30 s on 2 busy cores)."""

import json
import sys

from engine_probe import decode_perplexity_bench


def probe(folder: str, ask: dict) -> dict:
    import torch

    from optkit.checkpoints import Checkpoint
    from optkit.engines.vllm.engine import VllmEngine

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
    out.update(decode_perplexity_bench(lm, ids, ask["text_file"]))
    lm.llm.llm_engine.engine_core.shutdown()  # before the next model's engine starts
    return out


if __name__ == "__main__":
    ask = json.loads(open(sys.argv[1]).read())
    result = {name: probe(folder, ask[name]) for name, folder in ask["models"].items()}
    with open(sys.argv[2], "w") as fh:
        json.dump(result, fh)
