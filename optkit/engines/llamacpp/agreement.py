"""One GGUF file in two engines: llama.cpp on the file, PyTorch on its dequantized copy (convert.py), fed the same
ids (llama.cpp's). They hold the same weights, so their next-token distributions must nearly agree; a gap means
one engine reads the file differently (RoPE scaling, a norm epsilon, a chat template, vocabulary padding, the
tokenizer), and every number of that engine would be about another model.

Measured once per file (its content hash) in a child process (`python -m optkit.engines.llamacpp.agreement
FILE`: both models are loaded there and freed with it), cached, and recorded on every variant of that source.
The bound: llama.cpp multiplies quantized weights with activations it rounds to 8 bits, so the two never match to
the last bit; KL_BOUND and TOP1_BOUND leave room for that and for nothing else.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from optkit.results import LogitAgreement

VERSION = 1  # bump when the prompts or the measure change: cached figures are then measured again
KL_BOUND, TOP1_BOUND = 0.05, 0.85  # measured: SmolLM2 Q4_1 0.0033 / 93.8%, Gemma 3 Q4_K_M 0.0051 / 95.0%
PROMPT_TOKENS, PROMPTS = 64, 4
# Fixed English prose (written for this check), so the measure needs no data folder.
TEXT = (
    "The river rises in the hills to the north and runs for some forty miles before it reaches the sea. In the "
    "spring the water is high and fast, and the mills along its banks work day and night. The town at its mouth "
    "grew up around a small harbour, where fishing boats still land their catch each morning. Most of the old "
    "houses were built of local stone in the eighteenth century, when the wool trade made the valley rich. A "
    "railway came in 1862, and with it visitors from the cities, who walked the coast path and painted the cliffs. "
    "Today the station is a museum, the mills are flats, and the harbour holds more yachts than trawlers, but the "
    "market is still held every Thursday in the square, as it has been for six hundred years. The parish church "
    "keeps a list of its priests from 1240 to the present, and a bell that was cast, the record says, from a "
    "cannon taken from a Spanish ship that ran aground on the rocks below the headland in a winter storm."
)


def cache_path(src: Path) -> Path:
    from optkit.checkpoints import content_hash
    from optkit.files import cache_dir

    return cache_dir() / "agreement" / f"{content_hash(str(src))[:16]}-a{VERSION}.json"


def for_source(src: Path, timeout: float = 1800) -> LogitAgreement:
    """The cached measure of `src`, or a fresh one from a child process; 'skipped' with the reason when either
    engine cannot run the file here."""
    path = cache_path(src)
    try:
        return LogitAgreement.model_validate_json(path.read_text())
    except (OSError, ValueError):
        pass
    try:
        child = subprocess.run([sys.executable, "-m", "optkit.engines.llamacpp.agreement", str(src)],
                               capture_output=True, text=True, timeout=timeout, start_new_session=True)
        lines = [ln for ln in child.stdout.splitlines() if ln.startswith("{")]
        result = LogitAgreement.model_validate_json(lines[-1]) if lines else None
    except subprocess.TimeoutExpired:
        return _skipped(src, f"the measure took over {timeout:g}s and was stopped")
    if result is None:
        tail = [ln for ln in child.stderr.splitlines() if ln.strip()][-1:] or ["no output"]
        return _skipped(src, f"the measure failed (exit {child.returncode}): {tail[0][:200]}")
    if result.result != "skipped":
        from optkit.files import atomic_write

        atomic_write(path, result.model_dump_json())
    return result


def _skipped(src: Path, why: str) -> LogitAgreement:
    return LogitAgreement(model=Path(src).name, engines=["llamacpp", "torch"], result="skipped", detail=why)


def measure(src: Path) -> LogitAgreement:
    import importlib.util

    import torch

    from optkit.engines.llamacpp.engine import LlamaCppLM
    from optkit.engines.torch.engine import TorchEngine
    from optkit.errors import OptkitError

    started = time.perf_counter()
    if importlib.util.find_spec("llama_cpp") is None:
        return _skipped(src, "llama-cpp-python is not installed")
    try:
        from optkit.checkpoints import Checkpoint
        from optkit.engines.llamacpp.convert import hf_folder

        folder = hf_folder(Checkpoint(str(src), "gguf", str(src), "gguf"))
        torch_lm = TorchEngine().load(folder)
    except OptkitError as exc:
        return _skipped(src, f"PyTorch cannot load the file: {exc}")
    llama = LlamaCppLM(src)
    ids = llama.encode(TEXT)
    prefix = llama.prefix
    step = max(1, (len(ids) - PROMPT_TOKENS) // max(1, PROMPTS - 1))
    prompts = [prefix + ids[i * step:i * step + PROMPT_TOKENS] for i in range(PROMPTS)]
    kls, agree = [], []
    for prompt in prompts:
        batch = torch.tensor([prompt])
        p = torch.log_softmax(llama.logits(batch)[0][0].float(), dim=-1)
        q = torch.log_softmax(torch_lm.logits(batch)[0][0].float().cpu(), dim=-1)
        width = min(p.shape[-1], q.shape[-1])  # a vocabulary padded in one engine: compare the shared part
        p, q = p[:, :width], q[:, :width]
        kls += (p.exp() * (p - q)).sum(-1).clamp_min(0).tolist()
        agree += (p.argmax(-1) == q.argmax(-1)).float().tolist()
    kl_mean, top1 = sum(kls) / len(kls), sum(agree) / len(agree)
    ok = kl_mean <= KL_BOUND and top1 >= TOP1_BOUND
    return LogitAgreement(
        model=Path(src).name, engines=["llamacpp", "torch"], prompts=len(prompts), tokens=len(kls),
        kl_mean=round(kl_mean, 6), kl_max=round(max(kls), 6), top1_agreement=round(top1, 4),
        bound=f"KL mean <= {KL_BOUND} nats and top-1 agreement >= {TOP1_BOUND:.0%}",
        result="agrees" if ok else "disagrees", seconds=round(time.perf_counter() - started, 1),
        detail="" if ok else "the two engines read this file differently: numbers from one of them are about "
        "another model; report it with the file's general.architecture")


def main(argv: list[str]) -> int:
    from optkit.errors import quiet_libraries

    quiet_libraries()
    print(measure(Path(argv[0])).model_dump_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
