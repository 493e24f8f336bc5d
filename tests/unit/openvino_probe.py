"""Run by test_openvino.py inside the OpenVINO environment (its interpreter, optkit on PYTHONPATH): loads each tiny
model through optkit's OpenVINO engine (the HF folder exported to IR, float32) and writes what the LoadedModel
members return, for the test to compare with PyTorch's own numbers in optkit's environment. One process for every
model: importing optimum-intel and exporting are the cost."""

import json
import sys

from engine_probe import decode_perplexity_bench


def probe(folder: str, ask: dict, other: str) -> dict:
    import openvino_genai
    import torch

    from optkit.checkpoints import Checkpoint
    from optkit.engines.openvino import tokens
    from optkit.engines.openvino.engine import OpenVinoEngine

    lm = OpenVinoEngine().load(Checkpoint(folder, "folder", folder, "hf"), "float32")
    ids = ask["ids"]
    out = {"startup": lm.startup_seconds, "settings": lm.engine_settings, "params": lm.params, "format": lm.format,
           "prefix": lm.prefix, "encoded": lm.encode(ask["text"]), "token_logprobs": lm.token_logprobs(ids),
           "checks": [c.model_dump() for c in lm.tokenizer_checks]}
    # the cache: continuing the live state, and an older one (replayed), give the same logits as one pass
    whole, _ = lm.logits(torch.tensor([ids]))
    first, state = lm.logits(torch.tensor([ids[:10]]))
    rest, _ = lm.logits(torch.tensor([ids[10:]]), state)
    lm.logits(torch.tensor([ids[:3]]))
    again, _ = lm.logits(torch.tensor([ids[10:]]), state)
    out["cache_error"] = max(float((torch.cat([first, rest], 1) - whole).abs().max()),
                             float((again - rest).abs().max()))
    out.update(decode_perplexity_bench(lm, ids, ask["text_file"]))
    # another model's OpenVINO tokenizer held against this one's: the check that refuses a disagreeing pair
    from pathlib import Path

    from optkit.engines.openvino.export import exported

    native = openvino_genai.Tokenizer(str(exported(Path(other))))
    out["crossed"] = tokens.compare(lm.tokenizer, native, folder, "hf").result
    return out


if __name__ == "__main__":
    ask = json.loads(open(sys.argv[1]).read())
    names = list(ask["models"])
    result = {}
    for i, name in enumerate(names):
        other = ask["models"][names[(i + 1) % len(names)]]
        result[name] = probe(ask["models"][name], ask[name], other)
    with open(sys.argv[2], "w") as fh:
        json.dump(result, fh)
