"""llama.cpp as an engine: a GGUF file run by llama.cpp through llama-cpp-python's low-level API (the C
functions, no high-level Llama object), behind the same LoadedModel interface as the other engines, so
perplexity, fidelity, lm-eval tasks and the benchmark all read llama.cpp's own logits.

One model and one context per LoadedModel. The context holds the KV cache of up to n_seq_max sequences (one
llama.cpp sequence per batch row, decoded together in one llama_batch per step, as llama-server batches its
slots); it is made again, larger, when a call needs more sequences or positions. Token ids come from llama.cpp's own
tokenizer on the file's vocabulary (vocab.NativeTokenizer: the ids llama-server feeds the model), and the sizes
from the file's header (config.py): a GGUF as shipped needs neither transformers nor a conversion here. Where a
file was written from a PyTorch model (gguf.export), that model's tokenizer is held against llama.cpp's first, so
PyTorch and llama.cpp variants of one model score the same ids.

Settings kept fixed, because they change what is measured: flash attention on (what llama-server and llama-cli
pick on CPU; it changes quantized models' logits slightly) and the KV cache in llama.cpp's default f16. OpenMP's
wait policy is left at its default, as llama.cpp users run it: OMP_WAIT_POLICY=passive (tried, to spare a busy
machine) cut SmolLM2 Q4_1 decode from 85 to 22-25 tokens/s on two quiet cores.
"""

from __future__ import annotations

import shutil
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

from optkit.engines.base import Engine, LoadedModel, ModelInfo
from optkit.engines.llamacpp.lib import ENVIRONMENT, default_threads, last_error, library, load_model, version
from optkit.errors import BadInput, RunError

FLASH_ATTN = True
CHUNK = 512  # tokens per llama_decode call (n_batch = n_ubatch): bounds the logits buffer at CHUNK x vocab
MIN_CONTEXT = 1024  # KV cells per sequence at least; prompt + room to generate
FACTS = "optkit-gguf.json"  # beside a saved .gguf: parameter count and source, as ort's optkit-export.json
_probed: set = set()  # files probed in this process


@dataclass(frozen=True)
class Cache:
    """Where each sequence stands in the context's KV cache; `epoch` tells a cache a later start() replaced."""

    epoch: int
    pos: tuple[int, ...]


class _Context:
    """One llama_context with its llama_batch, freed with it."""

    def __init__(self, model, n_seq: int, per_seq: int, threads: int, watch=None):
        lib = library()
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_seq_max = n_seq * per_seq, n_seq  # kv_unified off: each sequence its own cells
        params.n_batch = params.n_ubatch = CHUNK
        params.n_threads = params.n_threads_batch = threads
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if FLASH_ATTN else \
            lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if watch is not None:  # ggml_backend_sched_eval_callback, e.g. the imatrix collector
            params.cb_eval, self.watch = watch, watch
        self.ptr = lib.llama_init_from_model(model, params)
        if not self.ptr:
            raise RunError(f"llama.cpp could not make a context for {n_seq} sequence(s) of {per_seq} tokens: "
                           f"{last_error()}")
        self.n_seq, self.per_seq = n_seq, per_seq
        self.batch = lib.llama_batch_init(CHUNK, 0, 1)
        self.memory = lib.llama_get_memory(self.ptr)
        self._free = weakref.finalize(self, _free_context, self.ptr, self.batch)

    def close(self) -> None:
        self._free()


def _free_context(ptr, batch) -> None:
    lib = library()
    lib.llama_batch_free(batch)
    lib.llama_free(ptr)


class LlamaCppLM(LoadedModel):
    """A GGUF file in llama.cpp, tokenized by llama.cpp itself; `config` (sizes) from the header unless the model
    it was made from gives its own; `owner` keeps the temporary folder of a file a step wrote alive exactly as long
    as the model."""

    engine = "llamacpp"

    def __init__(self, path, config=None, params: int | None = None, device: str = "cpu",
                 threads: int | None = None, owner=None, fmt: str = "gguf"):
        from optkit.engines.llamacpp.config import from_header
        from optkit.engines.llamacpp.vocab import NativeTokenizer, native
        from optkit.gguf_header import read

        self.path, self.owner = Path(path), owner
        self.config = config if config is not None else from_header(read(self.path))
        self.format, self.device = fmt, device
        self._threads = threads or default_threads()
        self.model = load_model(self.path, gpu=device.startswith("cuda"))
        lib = library()
        self._free = weakref.finalize(self, lib.llama_model_free, self.model)
        self.tokenizer = NativeTokenizer(self.path, model=self.model, owner=self)
        self.tokenizer_checks = [native(self.path.name, self.tokenizer)]
        self.params = params or int(lib.llama_model_n_params(self.model))
        self.n_vocab = int(lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model)))
        self._ctx: _Context | None = None
        self._epoch = 0
        self._watch = None

    @property
    def dtype(self) -> str:
        return "float32"  # activations; the weights' types show in size_bytes and the step's details

    def _fresh(self, n_seq: int, length: int) -> Cache:
        """An empty cache for n_seq new sequences of up to `length` tokens (a larger context when needed)."""
        if n_seq > self.max_batch:
            raise RunError(f"llama.cpp decodes at most {self.max_batch} sequences together; batch size {n_seq} is "
                           "not supported")
        ctx = self._ctx
        if ctx is None or n_seq > ctx.n_seq or length > ctx.per_seq:
            if ctx is not None:
                ctx.close()
            per_seq = -(-max(length + CHUNK, MIN_CONTEXT) // 256) * 256
            self._ctx = _Context(self.model, max(n_seq, ctx.n_seq if ctx else 1), per_seq, self._threads,
                                 self._watch)
        library().llama_memory_clear(self._ctx.memory, True)
        self._epoch += 1
        return Cache(self._epoch, (0,) * n_seq)

    def _decode(self, items: list[tuple[int, int, int, bool]]):
        """items: (token, position, sequence, wants logits). -> float32 array [flagged items, vocab], in order."""
        import numpy as np

        lib, ctx = library(), self._ctx
        rows = []
        for lo in range(0, len(items), CHUNK):
            chunk, b = items[lo:lo + CHUNK], ctx.batch
            for i, (token, pos, seq, out) in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, out
                b.seq_id[i][0] = seq
            b.n_tokens = len(chunk)
            code = lib.llama_decode(ctx.ptr, b)
            if code != 0:
                why = "no room left in the KV cache" if code == 1 else last_error()
                raise RunError(f"llama_decode failed ({code}): {why}")
            n = sum(1 for item in chunk if item[3])
            if n:
                rows.append(np.ctypeslib.as_array(lib.llama_get_logits(ctx.ptr), shape=(n, self.n_vocab)).copy())
        return np.concatenate(rows) if len(rows) > 1 else rows[0]

    def _cache(self, past: Cache | None, ids) -> Cache:
        if past is None:
            return self._fresh(len(ids), len(ids[0]))
        if past.epoch != self._epoch:
            raise RunError("llama.cpp keeps one cache per model and a later start() replaced this one")
        if len(past.pos) != len(ids):
            raise RunError(f"cache holds {len(past.pos)} sequences, got a batch of {len(ids)}")
        if max(past.pos) + len(ids[0]) > self._ctx.per_seq:
            raise RunError(f"sequence longer than the context ({self._ctx.per_seq} tokens); start again")
        return past

    def _run(self, input_ids, past: Cache | None, every: bool):
        import torch

        ids = input_ids.tolist()
        past = self._cache(past, ids)
        width = len(ids[0])
        items = [(t, past.pos[s] + i, s, every or i == width - 1)
                 for s, row in enumerate(ids) for i, t in enumerate(row)]
        logits = torch.from_numpy(self._decode(items))
        shape = (len(ids), width, self.n_vocab) if every else (len(ids), self.n_vocab)
        return logits.view(shape), Cache(past.epoch, tuple(p + width for p in past.pos))

    def logits(self, input_ids, past=None):
        return self._run(input_ids, past, every=True)

    def start(self, input_ids):
        return self._run(input_ids, None, every=False)

    def step(self, token_ids, past):
        return self._run(token_ids, past, every=False)

    @property
    def max_batch(self) -> int:
        return int(library().llama_max_parallel_sequences())  # llama.cpp's sequences per context

    def watch(self, callback) -> None:
        """Run every later call with this ggml eval callback on each tensor (None: stop)."""
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        self._watch = callback

    def size_bytes(self) -> int:
        return self.path.stat().st_size

    @property
    def threads(self) -> int:
        return self._threads

    def set_threads(self, n: int) -> None:
        self._threads = n
        if self._ctx is not None:
            library().llama_set_n_threads(self._ctx.ptr, n, n)

    def keep(self, folder, name: str) -> Path:
        """The file to deploy: moved out of a step's temporary folder into `folder` (a run's artifacts), or
        where it already lives (the checkpoint itself, a step's out_dir)."""
        if self.owner is None:
            return self.path
        Path(folder).mkdir(parents=True, exist_ok=True)
        target = Path(folder) / f"{name}.gguf"
        shutil.copy2(self.path, target)
        return target

    def save(self, folder) -> str:
        """The .gguf (llama.cpp loads it as it is: vocabulary and sizes are in it) and its parameter count."""
        import json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.path, folder / self.path.name)
        (folder / FACTS).write_text(json.dumps({"params": self.params, "file": self.path.name}, indent=2))
        return self.format


def gguf_file(ckpt) -> Path:
    """The .gguf of a checkpoint: the file itself, or the one file in an artifact folder optkit wrote."""
    path = Path(ckpt.location)
    if path.is_file():
        return path
    found = sorted(path.glob("*.gguf"))
    if len(found) != 1:
        raise BadInput(f"{path} holds {len(found)} .gguf files; a GGUF artifact folder holds exactly one")
    return found[0]


class LlamaCppEngine(Engine):
    name = "llamacpp"
    label = "llama.cpp"
    formats = ("gguf",)
    requires = ("llama_cpp",)
    extra = "llamacpp"
    environment = ENVIRONMENT

    def describe(self, ckpt, dtype: str, device: str, trust_remote_code: bool = False,
                 trust_pickle: bool = False) -> ModelInfo:
        """The header's architecture and vocabulary, known to the installed llama.cpp (asked in a child process: a
        vocabulary llama.cpp cannot parse aborts the process that reads it, and that must not be optkit's)."""
        path = gguf_file(ckpt)
        probe(path)
        if device.startswith("cuda") and not library().llama_supports_gpu_offload():
            raise BadInput("this llama-cpp-python was built without GPU support; rebuild it with "
                           "CMAKE_ARGS=-DGGML_CUDA=on (make setup does on a GPU machine) or use device: cpu")
        return ModelInfo(linears={}, dtype="float32", device=device, format="gguf")

    def load(self, ckpt, dtype: str = "float32", device: str = "cpu", trust_pickle: bool = False,
             trust_remote_code: bool = False) -> LlamaCppLM:
        import json

        path = gguf_file(ckpt)
        facts = path.parent / FACTS
        params = None
        if ckpt.kind != "gguf" and facts.is_file():  # an artifact optkit wrote: the model's logical weight count
            params = json.loads(facts.read_text()).get("params")
        return LlamaCppLM(path, None, params, device)

    def open(self, path, like: LoadedModel, threads: int | None = None, owner=None, fmt: str = "gguf") -> LlamaCppLM:
        """A file a step wrote from `like`: its sizes and logical weight count; its tokenizer is the file's own."""
        return LlamaCppLM(path, like.config, like.params, like.device, threads or like.threads, owner, fmt)


def probe(path: Path) -> None:
    """BadInput unless the installed llama.cpp reads the file's architecture and tokenizes with its vocabulary,
    found in a child process (`python -m optkit.engines.llamacpp.engine FILE`) that loads the vocabulary only."""
    import json
    import subprocess

    key = (str(path), path.stat().st_size, path.stat().st_mtime_ns)
    if key in _probed:
        return
    from optkit.isolate import die_with_parent

    try:
        child = subprocess.run([sys.executable, "-m", "optkit.engines.llamacpp.engine", str(path)],
                               capture_output=True, text=True, timeout=300,
                               preexec_fn=die_with_parent if sys.platform == "linux" else None)
    except subprocess.TimeoutExpired:  # unknown, not refused: the worker loads it in its own process anyway
        print(f"optkit: warning: llama.cpp's vocabulary check of {path} timed out after 300 s; not checked",
              file=sys.stderr, flush=True)
        return
    lines = child.stdout.strip().splitlines()
    answer = json.loads(lines[-1]) if child.returncode == 0 and lines else None
    if answer is None:
        raise BadInput(f"{path}: llama.cpp {version()} crashes reading this file's vocabulary (exit "
                       f"{child.returncode}); convert the model again with llama.cpp's converter (gguf.export does) "
                       "or run the file in PyTorch (drop engine: llamacpp)")
    if answer.get("error"):
        from optkit.gguf_header import read

        arch = read(path).architecture
        if "unknown model architecture" in answer["error"] or "unsupported model architecture" in answer["error"]:
            raise BadInput(f"{path}: llama.cpp {version()} cannot read GGUF architecture {arch!r}; run the file in "
                           "PyTorch (drop engine: llamacpp) or install a llama-cpp-python that knows it")
        raise BadInput(f"{path}: {answer['error']}; convert the model again with llama.cpp's converter")
    _probed.add(key)


def _probe_child(path: str) -> dict:
    import json

    lib = library()
    try:
        model = load_model(path, vocab_only=True)
    except RunError as exc:
        return print(json.dumps({"error": str(exc)}))
    text = b"Hello world, 123 tokens."
    ids = (lib.llama_token * 64)()
    lib.llama_tokenize(lib.llama_model_get_vocab(model), text, len(text), ids, 64, False, False)  # may abort
    lib.llama_model_free(model)
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    _probe_child(sys.argv[1])
