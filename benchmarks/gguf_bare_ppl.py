"""Token perplexity of a GGUF file computed with llama.cpp alone (llama-cpp-python's high-level Llama object: its
tokenizer, its logits), written from the definition with no optkit code, against `optkit eval FILE` in both
engines on the same text and windows:

    python benchmarks/gguf_bare_ppl.py FILE.gguf [--tokens 1024] [--window 512] [--stride 256] [--optkit]

The text is WikiText-2 test ($OPTKIT_DATA/wikitext-2/test.txt), tokenized as text (no special tokens added,
none parsed: "<unk>" in it is five characters). Each window holds the file's BOS (when its vocabulary adds one)
and then up to window-1 text tokens; the first window scores every text token it holds, each later window ends
`stride` tokens further and scores only its new tokens, so each token is scored once with at least
window - stride - 1 tokens of context. Perplexity = exp(mean NLL). With --optkit, `optkit eval` runs with the
same settings through PyTorch and llama.cpp and the three figures are printed side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def bare(path: str, n_tokens: int, window: int, stride: int) -> tuple[float, int]:
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=window, n_batch=window, logits_all=True, verbose=False)
    text = (Path(os.environ["OPTKIT_DATA"]) / "wikitext-2" / "test.txt").read_text(encoding="utf-8")
    ids = llm.tokenize(text.encode(), add_bos=False, special=False)[:n_tokens]
    bos = [llm.token_bos()] if llm._model.add_bos_token() else []  # the file's own rule, as llama-server applies it
    room = window - len(bos)
    nll, lo, hi = [], (0 if bos else 1), min(room, len(ids))
    while lo < len(ids):
        start = max(0, hi - room)
        seq = bos + ids[start:hi]
        llm.reset()
        llm.eval(seq)
        logits = np.asarray(llm.scores[:len(seq)], dtype=np.float64)
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits.max(-1, keepdims=True)
        for pos in range(lo, hi):  # text token pos sits at len(bos) + pos - start in seq
            at = len(bos) + pos - start
            nll.append(-logp[at - 1, seq[at]])
        lo, hi = hi, min(hi + min(stride, room - 1), len(ids))
    return math.exp(sum(nll) / len(nll)), len(nll)


def optkit_eval(path: str, n_tokens: int, engine: str | None) -> float:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "optkit", "eval", path, "--max-tokens", str(n_tokens), "-o", out]
        done = subprocess.run(cmd + (["--engine", engine] if engine else []), capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"optkit eval failed: {done.stderr[-2000:]}")
        report = json.loads((Path(out) / "report.json").read_text())
    return next(a["value"] for a in report["variants"][0]["accuracy"] if a["metric"] == "token_perplexity")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument("--optkit", action="store_true", help="also run optkit eval in both engines (same settings)")
    args = ap.parse_args()
    ppl, n = bare(args.file, args.tokens, args.window, args.stride)
    print(f"bare llama.cpp: token perplexity {ppl:.3f} on {n} scored tokens")
    if args.optkit and (args.window, args.stride) == (512, 256):  # optkit eval's defaults
        for engine in ("torch", "llamacpp"):
            got = optkit_eval(args.file, args.tokens, None if engine == "torch" else engine)
            print(f"optkit eval ({engine}): {got:.3f} ({(got / ppl - 1) * 100:+.2f}% vs bare)")


if __name__ == "__main__":
    main()
