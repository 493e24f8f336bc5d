"""The one interface every loaded model exposes, whatever engine runs it, and the Engine contract.

Evaluators and meters call only what LoadedModel declares: they never ask which engine they hold. An engine
(a folder under engines/, or a plugin in the `optkit.engines` entry-point group) declares the formats it
loads and turns a checkpoint in one of them into a LoadedModel.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass
class ModelInfo:
    """What preflight knows about a model without its weights: linear shapes, dtype, device and format."""

    linears: dict[str, tuple[int, int]]  # name -> (out_features, in_features); empty when not known
    dtype: str
    device: str
    format: str = "hf"  # formats.py: what the model is after the steps so far
    notes: list[str] = field(default_factory=list)


class LoadedModel(ABC):
    """A causal LM ready to score and generate, with its tokenizer.

    Attributes every engine sets: engine (its registry name), format (formats.py), device ("cpu", "cuda"),
    tokenizer (the one the model is served with, with the part of the Hugging Face tokenizer interface optkit uses:
    __call__ / encode with add_special_tokens and split_special_tokens, decode, convert_ids_to_tokens, the special
    token ids; a llama.cpp model's is llama.cpp's own), config (sizes for the roofline, context length), params
    (logical weight count), tokenizer_checks (results.TokenizerCheck: what the tokenizer was held against).
    """

    engine: str = "?"
    format: str = "hf"
    device: str = "cpu"
    tokenizer = None
    config = None
    params: int = 0
    tokenizer_checks: list = []  # set per model; read-only default
    # what starting the engine cost, apart from its steady-state speed ("total", "compile" seconds); an engine
    # with a heavy start (vLLM: compilation, KV cache) fills it and the result records it
    startup_seconds: dict[str, float] = {}
    # settings the engine reports it computes with (OpenVINO's precision hints), recorded with the result
    engine_settings: dict[str, str] = {}

    @property
    @abstractmethod
    def dtype(self) -> str:
        """The dtype activations are computed in ("float32", "bfloat16", ...)."""

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def encode(self, text: str) -> list[int]:
        """Token ids of a text as text: no special tokens added, and none parsed out of it (a document that writes
        "<unk>" or "<s>" is scored on those characters, as llama.cpp scores it; callers put `prefix` before each
        sequence they score)."""
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    @property
    def prefix(self) -> list[int]:
        """The ids the model's own tokenizer puts before a text (its post-processor / add_bos_token: BOS for
        Llama, Gemma, Mistral; nothing for Qwen), found by encoding with and without special tokens, as lm-eval's
        hf model leaves it to the tokenizer. Every sequence optkit scores or calibrates on starts with them."""
        if not hasattr(self, "_prefix"):
            probe = "The cat"
            bare = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
            full = self.tokenizer(probe)["input_ids"]
            cut = next((i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare), 0)
            self._prefix = list(full[:cut])
        return self._prefix

    def special_tokens_rule(self) -> str:
        """The prefix rule in words, for the report."""
        if not self.prefix:
            return "no special tokens before a text (the tokenizer adds none)"
        names = self.tokenizer.convert_ids_to_tokens(self.prefix)
        return f"{' '.join(names)} (id {', '.join(map(str, self.prefix))}) before every sequence, as the " \
               "tokenizer adds it"

    @abstractmethod
    def logits(self, input_ids, past=None):
        """Forward pass over a (batch, seq) tensor: (float32 logits for every position, new cache)."""

    @abstractmethod
    def start(self, input_ids):
        """Prefill: run the prompt, return (last-position logits, cache)."""

    @abstractmethod
    def step(self, token_ids, past):
        """One decode step for a (batch, 1) tensor of token ids: (last-position logits, cache)."""

    def token_logprobs(self, ids: list[int]) -> list[float]:
        """Log-prob of each token of one sequence given the ones before it (positions 1..n-1): what perplexity
        scores. From `logits` here; an engine that gives log-probs, not logits (vLLM), overrides it."""
        import torch

        seq = torch.tensor([ids])
        logits, _ = self.logits(seq)
        logp = torch.log_softmax(logits[0, :-1].float(), dim=-1)
        return logp.gather(1, seq[0, 1:, None].to(logp.device))[:, 0].tolist()

    def top_logprobs(self, ids: list[int], k: int):
        """The k most likely next tokens at every position of one sequence: (log-probs, token ids), float32 and
        int64 tensors of shape (len, k), most likely first."""
        import torch

        logits, _ = self.logits(torch.tensor([ids]))
        top = torch.log_softmax(logits[0].float().cpu(), dim=-1).topk(min(k, logits.shape[-1]), dim=-1)
        return top.values, top.indices

    def logprobs_at(self, ids: list[int], index):
        """Log-probs of given tokens (index: (len, k) token ids) at every position of one sequence, and the most
        likely token at each: ((len, k) float32, (len,) int64). NaN where the engine only knows its own most
        likely tokens and the token is not among them (callers then merge it into the rest of the vocabulary)."""
        import torch

        logits, _ = self.logits(torch.tensor([ids]))
        logp = torch.log_softmax(logits[0].float().cpu(), dim=-1)
        return logp.gather(-1, index.long()), logp.argmax(-1)

    def loglikelihoods(self, requests: list[tuple[list[int], list[int]]]):
        """lm-eval's loglikelihood requests (context ids, continuation ids) -> [(sum of the continuation's
        log-probs, whether greedy decoding gives it)], or None: lm-eval's adapter then scores through `logits`
        (batched, sharing contexts through the cache). Engines that score whole requests natively override it."""
        return None

    def generate_greedy(self, requests: list[tuple[list[int], int, list[str]]]):
        """Greedy continuations for (prompt ids, most new tokens, stop strings), cut before the first stop string;
        or None: lm-eval's adapter then decodes through start/step."""
        return None

    def expect_decode(self, tokens: int) -> None:  # noqa: B027 - engines stepping token by token need no notice
        """From now on every `start` is followed by at most `tokens` `step` calls per sequence (the benchmark says
        so): an engine that schedules whole requests sizes them by it."""

    def repeat_cache(self, past, times: int):
        """The cache with each sequence repeated `times` times (to score several continuations of one prompt),
        or None where the engine cannot copy a cache (callers then score the plain way)."""
        return None

    @property
    def max_batch(self) -> int | None:
        """The most sequences the engine decodes together (None: no limit of its own); the benchmark skips larger
        batch sizes and says so in the report."""
        return None

    def synchronize(self) -> None:  # noqa: B027 - engines whose calls return finished results need nothing
        """Wait until queued device work is done (timing brackets call it)."""

    @abstractmethod
    def size_bytes(self) -> int:
        """What the weights cost on disk."""

    @property
    def threads(self) -> int | None:
        """Compute threads the engine uses (None: not an engine setting)."""
        return None

    def set_threads(self, n: int) -> None:  # noqa: B027 - an engine without a thread setting ignores it
        """Use n compute threads from now on (benchmarks set bench.threads this way)."""

    def serve(self, spec, prompt_len: int, gen_len: int):
        """An online serving sweep (recipe.ServingSpec) through the engine's own server and client -> a
        results.ServingRun; None where optkit drives no server for this engine. Runs last: it may close the
        loaded model to give the server its memory."""
        return None

    def keep(self, folder, name: str):
        """Where the model is one file an engine loads as it is: that file's path, copied into `folder` as
        `name` + its suffix when it would vanish with a step's temporary folder; None otherwise."""
        return None

    def save(self, folder) -> str | None:
        """Write the model where an engine loads it without optkit; return the format written, or None when no
        such format exists (the caller then writes a replay manifest)."""
        return None


class Engine:
    """Loads checkpoints of the formats it names into LoadedModels."""

    name = "?"
    label = "?"  # for people: "PyTorch", "ONNX Runtime"
    formats: tuple[str, ...] = ()  # formats.py names (or a plugin's Format names) it loads
    requires: tuple[str, ...] = ()  # importable modules
    extra = ""  # pip extra that brings `requires`
    # environment variables its library reads once, when it loads (e.g. OpenMP's wait policy): the worker sets
    # them before any library loads, in every process that will run this engine
    environment: dict[str, str] = {}

    def describe(self, ckpt, dtype: str, device: str, trust_remote_code: bool = False,
                 trust_pickle: bool = False) -> ModelInfo:
        """Preflight facts from a config or header alone: no weights are read. Whatever would stop load() and can
        be seen here (a weights format, an architecture the engine cannot read) is refused here, as BadInput."""
        return ModelInfo(linears={}, dtype=dtype, device=device, format=ckpt.format)

    def load(self, ckpt, dtype: str = "float32", device: str = "cpu", trust_pickle: bool = False,
             trust_remote_code: bool = False) -> LoadedModel:
        raise NotImplementedError

    def check_served(self, info: ModelInfo, steps: list) -> list[str]:
        """Problems this engine would have running what a variant's steps make (info: the model after them; steps:
        (method, params) pairs), seen before any step runs: e.g. a quantization scheme its kernels reject on this
        hardware. Called in optkit's environment, also for an engine that has one of its own (envs.py)."""
        return []

    def open(self, path, like: LoadedModel, **options) -> LoadedModel:
        """Load a file a conversion step just wrote, taking tokenizer, config and parameter count from the model
        it was made from (`like`). Engines that are a conversion target implement it."""
        raise NotImplementedError
