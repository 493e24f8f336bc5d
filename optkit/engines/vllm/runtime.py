"""Starting vLLM the way optkit measures it: caches redirected under OPTKIT_CACHE (vLLM writes ~/.cache/vllm and
torchinductor_* in the temp folder otherwise), nothing from the hub, and the start-up cost timed apart from the
steady state (LLM() took 78-160 s here, ~65 s of it torch.compile when not eager).

Settings people may change, through the environment (read when the engine starts):
  OPTKIT_VLLM_EAGER=1        enforce_eager: no torch.compile (tests; a start ~1 minute shorter, decode slower)
  OPTKIT_VLLM_MAX_LEN=N      the context vLLM reserves KV cache for (default: the model's, at most 4096)
  VLLM_CPU_KVCACHE_SPACE=GiB KV cache on CPU (default here 2), VLLM_CPU_OMP_THREADS_BIND (default auto: on two
                             cores vLLM computes on one and keeps one for its scheduler; both was 2.6x slower)
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

MAX_LEN = 4096
TOP_K = 256  # the most log-probs per position optkit asks for (fidelity's top-k)


def prepare_environment() -> None:
    """Before vLLM is imported: caches under OPTKIT_CACHE, offline, no usage reports."""
    from optkit.files import cache_dir

    root = cache_dir() / "vllm"
    os.environ.setdefault("VLLM_CACHE_ROOT", str(root))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))
    for key, value in (("HF_HUB_OFFLINE", "1"), ("VLLM_NO_USAGE_STATS", "1"), ("DO_NOT_TRACK", "1"),
                       ("VLLM_CPU_KVCACHE_SPACE", "2"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)


def _stderr_file() -> Path | None:
    """The file this process's stderr goes to (the worker's log), where vLLM's processes log their timings."""
    try:
        path = Path(os.readlink("/proc/self/fd/2"))
    except OSError:
        return None
    return path if path.is_file() else None


def _logged(path: Path | None, offset: int, pattern: str) -> float | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    found = re.findall(pattern, text)
    return round(sum(float(x) for x in found), 2) if found else None


def start(folder: str, dtype: str, max_len: int):
    """LLM() on a model folder -> (llm, {"total": s, "compile": s, "engine_init": s}); compile and engine_init as
    vLLM's own processes log them (None where the log cannot be read)."""
    prepare_environment()
    from vllm import LLM

    log = _stderr_file()
    offset = log.stat().st_size if log else 0
    eager = os.environ.get("OPTKIT_VLLM_EAGER", "") not in ("", "0")
    started = time.perf_counter()
    # the platform (CPU or CUDA) is the installed build's: the environment was built for this machine's kind
    llm = LLM(model=folder, dtype=dtype, max_model_len=max_len, enforce_eager=eager, max_logprobs=TOP_K, seed=0)
    seconds = {"total": round(time.perf_counter() - started, 2)}
    for key, pattern in (("compile", r"torch\.compile took ([0-9.]+) s in total"),
                         ("engine_init", r"init engine \(profile, create kv cache, warmup model\) took ([0-9.]+)")):
        value = _logged(log, offset, pattern)
        if value is not None:
            seconds[key] = value
    seconds["eager"] = float(eager)
    return llm, seconds
