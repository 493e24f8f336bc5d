"""OrtLM: an exported decoder-only model (model.onnx with past key/values, as optimum's
text-generation-with-past export writes it) run by a plain onnxruntime InferenceSession, behind the
same small interface as TorchLM, so perplexity and the benchmark run unchanged.

A plain session rather than optimum's ORTModelForCausalLM: the cache is just the list of present.*
arrays fed back as past_key_values.*, and quantization steps swap model files under us, which a session
handles by simply loading the new file.
"""

from __future__ import annotations

from pathlib import Path

from optkit.engines.base import Engine, LoadedModel, ModelInfo
from optkit.errors import BadInput

LEVELS = ("disable", "basic", "extended", "all")
PROVIDERS = ("cpu", "cuda", "auto")
EXPORT_FACTS = "optkit-export.json"  # what `optkit export` measured: params, validation, source
_NP_DTYPE = {"tensor(float)": "float32", "tensor(float16)": "float16"}


def resolve_provider(provider: str) -> str:
    """'auto' -> cuda when onnxruntime-gpu sees a GPU, else cpu; 'cuda' without one is an error for people."""
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if provider == "auto":
        return "cuda" if has_cuda else "cpu"
    if provider == "cuda" and not has_cuda:
        raise ValueError("provider 'cuda' needs onnxruntime-gpu and a visible GPU; use provider: cpu")
    return provider


def onnx_files(model_path: Path) -> list[Path]:
    """The .onnx file and every external-data file it references (only those: a folder may hold others)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    names = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            names |= {e.value for e in tensor.external_data if e.key == "location"}
    return [model_path] + [model_path.parent / n for n in sorted(names)]


class OrtLM(LoadedModel):
    """An ONNX causal LM on onnxruntime with its tokenizer; `owner` keeps the temp folder of its files alive."""

    engine = "onnxruntime"

    def __init__(self, model_path, tokenizer, config, params: int, provider: str = "cpu", threads: int = 0,
                 optimization: str = "all", owner=None, fmt: str = "onnx"):
        self.model_path = Path(model_path)
        self.format = fmt
        self.tokenizer = tokenizer
        self.config = config
        self.params = params  # logical weight count of the PyTorch model it came from
        self.provider = resolve_provider(provider)
        self.device = "cuda" if self.provider == "cuda" else "cpu"
        self._threads, self.optimization, self.owner = threads, optimization, owner
        self.session = self._session()
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self._present_names = [o.name for o in self.session.get_outputs() if o.name.startswith("present")]
        if not self._past_names or "logits" not in [o.name for o in self.session.get_outputs()]:
            raise ValueError(f"{self.model_path} is not a with-past causal LM export (no past_key_values inputs)")
        first = inputs[self._past_names[0]]
        self._kv_dtype = _NP_DTYPE.get(first.type, "float32")
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = first.shape  # (batch, kv_heads, past_len, head_dim); symbolic dims are strings
        self._kv_heads = shape[1] if isinstance(shape[1], int) else heads
        self._head_dim = shape[3] if isinstance(shape[3], int) else head_dim
        self._wants = {n for n in ("attention_mask", "position_ids") if n in inputs}

    def _session(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        if self._threads:
            opts.intra_op_num_threads = self._threads
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.provider == "cuda" \
            else ["CPUExecutionProvider"]
        return ort.InferenceSession(str(self.model_path), sess_options=opts, providers=providers)

    def with_model(self, model_path) -> OrtLM:
        """The same settings on another model file (what a quantization step produced)."""
        return OrtLM(model_path, self.tokenizer, self.config, self.params, self.provider, self._threads,
                     self.optimization, self.owner, self.format)

    @property
    def dtype(self) -> str:
        return self._kv_dtype  # activations and cache; quantized weights show up in size_bytes instead

    def feed(self, input_ids, past=None) -> dict:
        """The session inputs for token ids (a tensor or array [batch, seq]) after a cache (None: an empty
        one, [batch, kv_heads, 0, head_dim]); static quantization calibrates on exactly these."""
        import numpy as np

        if hasattr(input_ids, "detach"):
            input_ids = input_ids.detach().cpu().numpy()
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        batch, seq = ids.shape
        if past is None:
            empty = np.zeros((batch, self._kv_heads, 0, self._head_dim), dtype=self._kv_dtype)
            past = [empty] * len(self._past_names)
        past_len = past[0].shape[2]
        feed = {"input_ids": ids, **dict(zip(self._past_names, past))}
        if "attention_mask" in self._wants:
            feed["attention_mask"] = np.ones((batch, past_len + seq), dtype=np.int64)
        if "position_ids" in self._wants:
            feed["position_ids"] = np.broadcast_to(np.arange(past_len, past_len + seq, dtype=np.int64),
                                                   (batch, seq)).copy()
        return feed

    def _run(self, input_ids, past):
        import torch

        out = self.session.run(["logits", *self._present_names], self.feed(input_ids, past))
        return torch.from_numpy(out[0]).float(), out[1:]

    def logits(self, input_ids, past=None):
        """Forward pass: returns (float32 logits as a CPU torch tensor, new cache: a list of arrays)."""
        return self._run(input_ids, past)

    def start(self, input_ids):
        logits, past = self._run(input_ids, None)
        return logits[:, -1], past

    def step(self, token_ids, past):
        logits, past = self._run(token_ids, past)
        return logits[:, -1], past

    def synchronize(self) -> None:
        """session.run returns host arrays, so every call has already finished."""

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in onnx_files(self.model_path))

    @property
    def threads(self) -> int | None:
        return self._threads or None  # 0: onnxruntime's own choice

    def set_threads(self, n: int) -> None:
        self._threads = n
        self.session = self._session()

    def save(self, folder) -> str:
        """model.onnx (+ its external data), config, tokenizer and the engine's facts: a folder ONNX Runtime, and
        optkit as a checkpoint, load."""
        import json
        import shutil

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for src in onnx_files(self.model_path):
            shutil.copy2(src, folder / ("model.onnx" if src == self.model_path else src.name))
        self.config.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        (folder / EXPORT_FACTS).write_text(json.dumps({"params": self.params, "provider": self.provider}, indent=2))
        return self.format


class OrtEngine(Engine):
    name = "onnxruntime"
    label = "ONNX Runtime"
    formats = ("onnx", "onnx-quantized")
    requires = ("onnxruntime", "onnx")
    extra = "onnx"

    def describe(self, ckpt, dtype: str, device: str, trust_remote_code: bool = False,
                 trust_pickle: bool = False) -> ModelInfo:
        if dtype != "float32":  # an exported folder runs in the dtype it was exported in
            raise BadInput(f"checkpoint {ckpt.given!r} is an ONNX export and runs in the dtype it was exported in; "
                           f"drop dtype {dtype} (--dtype / model.dtype)")
        return ModelInfo(linears={}, dtype=dtype, device=device, format=ckpt.format)

    def load(self, ckpt, dtype: str = "float32", device: str = "cpu", trust_pickle: bool = False,
             trust_remote_code: bool = False) -> OrtLM:
        return load_folder(Path(ckpt.location), device, ckpt.format)

    def open(self, path, like: LoadedModel, provider: str = "cpu", threads: int = 0, optimization: str = "all",
             owner=None, fmt: str = "onnx") -> OrtLM:
        return OrtLM(path, like.tokenizer, like.config, like.params, provider, threads, optimization, owner, fmt)


def load_folder(folder: Path, device: str = "cpu", fmt: str = "onnx") -> OrtLM:
    """An exported folder (model.onnx + config.json + tokenizer, as `optkit export` writes it) as an OrtLM."""
    import json

    from transformers import AutoConfig, AutoTokenizer

    folder = Path(folder)
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    facts = folder / EXPORT_FACTS
    params = json.loads(facts.read_text()).get("params") if facts.is_file() else None
    return OrtLM(folder / "model.onnx", tokenizer, config, params or _param_count(config), device, fmt=fmt)


def _param_count(config) -> int:
    """Logical weight count from the config alone (meta tensors), for folders exported elsewhere."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once
