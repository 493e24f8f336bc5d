"""What the served-model tokenizer check costs per load: llama.cpp's vocabulary loaded vocab-only, and the fixed
sample tokenized by it and by the tokenizer optkit scores with, for a GGUF's PyTorch copy (the HF tokenizer built
from the file, loaded from its converted folder) and for the file in llama.cpp (native: only the vocabulary load).

    python benchmarks/tokenizer_check.py FILE.gguf [FILE.gguf ...] [--runs 5]

Prints, per file, the median and range over runs of: the tokenizer's load from the converted folder (paid by every
PyTorch load anyway), the vocab-only llama.cpp load, and the check itself. Converts each file first if it is not
converted yet (not timed).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from optkit.engines.llamacpp.convert import hf_folder


def once(path: Path, folder: Path) -> tuple[float, float, float]:
    from optkit.engines.llamacpp import vocab
    from optkit.engines.llamacpp.convert import load_tokenizer

    started = time.perf_counter()
    tokenizer = load_tokenizer(folder)
    loaded = time.perf_counter()
    native = vocab.NativeTokenizer(path)
    vocab_loaded = time.perf_counter()
    result = vocab.check(tokenizer, native, path.name, "built")
    done = time.perf_counter()
    assert result.result == "agrees", result.detail
    return loaded - started, vocab_loaded - loaded, done - vocab_loaded


def main() -> None:
    from optkit import checkpoints

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    for path in args.files:
        folder = Path(hf_folder(checkpoints.resolve(str(path))).location)
        runs = [once(path, folder) for _ in range(args.runs)]
        cols = list(zip(*runs))
        fmt = lambda xs: f"{statistics.median(xs):.3f} s ({min(xs):.3f}-{max(xs):.3f})"  # noqa: E731
        print(f"{path.name}: HF tokenizer load {fmt(cols[0])}; llama.cpp vocab-only load {fmt(cols[1])}; "
              f"check {fmt(cols[2])}; check cost per load (vocab + check) "
              f"{fmt([a + b for a, b in zip(cols[1], cols[2])])}, over {args.runs} runs")


if __name__ == "__main__":
    main()
