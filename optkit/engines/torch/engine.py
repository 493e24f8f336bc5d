"""The PyTorch engine: HF folders, hub ids and (converted) GGUF files through transformers, as TorchLM.
Plain, torchao, bitsandbytes, dynamically quantized and pruned models all run here."""

from __future__ import annotations

import io
from pathlib import Path

from optkit.engines.base import Engine, LoadedModel, ModelInfo
from optkit.errors import BadInput, RunError


def _skip_sklearn() -> None:
    """transformers' auto classes import scikit-learn (with SciPy and pandas) for one thing only, assisted
    generation's confidence threshold (generation/candidate_generator.py), which optkit never runs: 1.5-2.3 s of
    every process that loads a model here, measured with -X importtime. Told that scikit-learn is absent before
    that module loads, they skip it; lm-eval still imports scikit-learn itself for the metrics that need it.

    torch is imported first, as loading a model used to: importing transformers puts alias modules into sys.modules
    that import their target (one needs torchvision) on any attribute lookup, and pickle looks a torch.qscheme's
    name up module by module in sys.modules order, so torch.save of a dynamically quantized model failed with
    "No module named 'torchvision'" when those aliases came before torch."""
    import sys

    if "transformers.generation.candidate_generator" not in sys.modules:
        import torch  # noqa: F401  (before transformers: see above)
        import transformers.utils

        transformers.utils.is_sklearn_available = lambda: False


_skip_sklearn()  # this module is imported only to load or describe a model through transformers


class TorchLM(LoadedModel):
    """A PyTorch causal LM with its tokenizer."""

    engine = "torch"

    def __init__(self, model, tokenizer, device: str = "cpu", params: int | None = None, fmt: str = "hf"):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.format = fmt
        # logical weight count as loaded, before any quantization packs weights out of sight
        self.params = params if params is not None else \
            sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())

    def with_model(self, model) -> TorchLM:
        """The same tokenizer and device around another module (a trial copy, one layer in a wrapper)."""
        return TorchLM(model, self.tokenizer, self.device, self.params, self.format)

    @property
    def dtype(self) -> str:
        import torch

        floats = [p.dtype for p in self.model.parameters() if p.dtype.is_floating_point]
        return str(floats[0] if floats else torch.float32).removeprefix("torch.")

    @property
    def config(self):
        return self.model.config

    def logits(self, input_ids, past=None):
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=input_ids.to(self.device), past_key_values=past, use_cache=past is not None)
        return out.logits.float(), out.past_key_values

    def start(self, input_ids):
        import torch
        from transformers import DynamicCache

        with torch.inference_mode():
            out = self.model(input_ids=input_ids.to(self.device), past_key_values=DynamicCache(), use_cache=True)
        return out.logits[:, -1], out.past_key_values

    def step(self, token_ids, past):
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=token_ids.to(self.device), past_key_values=past, use_cache=True)
        return out.logits[:, -1], out.past_key_values

    def repeat_cache(self, past, times: int):
        past.batch_repeat_interleave(times)
        return past

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def size_bytes(self) -> int:
        """Bytes of the serialized state dict: what the weights really cost on disk. A compressed-tensors model:
        its folder's safetensors files (packed), since transformers holds it decompressed in memory on CPU."""
        import torch

        source = getattr(self, "source_folder", None)
        if self.format == "compressed-tensors" and source is not None:
            return sum(f.stat().st_size for f in source.glob("*.safetensors"))

        buf = _CountingWriter()
        torch.save(self.model.state_dict(), buf)
        return buf.count

    @property
    def threads(self) -> int:
        import torch

        return torch.get_num_threads()

    def set_threads(self, n: int) -> None:
        import torch

        torch.set_num_threads(n)

    def save(self, folder) -> str | None:
        """Float and bitsandbytes models as an HF safetensors folder (save_pretrained: transformers loads it
        back, bitsandbytes through the quantization_config the bnb step set); others have no such format."""
        from optkit import formats

        if formats.get(self.format).artifact != "hf-folder":
            return None
        source = getattr(self, "source_folder", None)
        if source is not None:  # a folder a step wrote and this model was loaded from (compressed-tensors)
            import shutil

            shutil.copytree(source, folder, dirs_exist_ok=True)
            return self.format
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        return self.format


class _CountingWriter(io.RawIOBase):
    def __init__(self):
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        n = len(memoryview(data))
        self.count += n
        return n


def _check_weights_format(folder: Path, trust_pickle: bool) -> None:
    if any(folder.glob("*.safetensors")) or trust_pickle:
        return
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise BadInput(f"{folder} holds only pickle weights (.bin), which can run code when loaded; pass "
                       "--allow-pickle only if you trust where it came from")
    raise BadInput(f"{folder} has no weights (*.safetensors); pass a complete Hugging Face model folder")


def _config(ckpt, trust_remote_code: bool):
    """The model's config, and its module on the meta device; transformers' errors (an unknown model_type, a
    malformed config.json, code the caller did not trust) as one line naming the file and the fix."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from optkit.engines.llamacpp.convert import hf_folder

    where = hf_folder(ckpt)
    name = f"{where.location}/config.json" if where.kind != "hub" else f"{where.location} (hub) config.json"
    try:
        config = AutoConfig.from_pretrained(where.location, trust_remote_code=trust_remote_code,
                                            revision=where.pinned() if where.kind == "hub" else None)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - transformers (and huggingface_hub's strict dataclasses) raise many types
        full = " ".join(str(exc).split())
        text = full[:300] or type(exc).__name__
        if "trust_remote_code" in full:
            text = "it names its own Python code (auto_map), which optkit runs only when asked"
            fix = "pass --trust-remote-code only if you trust the model's code"
        elif "model_type" in text or "model type" in text or isinstance(exc, (KeyError, ValueError)):
            fix = "check model_type and the fields there, or upgrade transformers if the architecture is new"
        else:
            fix = "check the file is a complete, valid Hugging Face config"
        raise BadInput(f"{name}: transformers cannot read it ({type(exc).__name__}: {text}); {fix}") from None
    return config, model


def _tokenizer(ckpt, trust_remote_code: bool):
    from transformers import AutoTokenizer

    from optkit.engines.llamacpp.convert import load_tokenizer, source_of

    if ckpt.kind != "hub" and source_of(Path(ckpt.location)) is not None:  # a folder optkit converted from a GGUF
        return load_tokenizer(Path(ckpt.location))
    return AutoTokenizer.from_pretrained(ckpt.location, trust_remote_code=trust_remote_code,
                                         revision=ckpt.pinned() if ckpt.kind == "hub" else None)


def _say(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


def _checked_tokenizer(folder: Path, given: str) -> None:
    """Preflight: a converted folder's tokenizer against its GGUF, so a disagreement stops the run before any
    worker starts (the worker checks again when it loads); nothing for other folders."""
    from optkit.engines.llamacpp.convert import check_folder, load_tokenizer, source_of

    if source_of(folder) is not None:
        check_folder(folder, load_tokenizer(folder), given)


class TorchEngine(Engine):
    name = "torch"
    label = "PyTorch"
    formats = ("hf", "gguf", "bnb", "compressed-tensors")  # gguf: converted to an HF folder once, then cached
    requires = ("torch", "transformers")
    extra = "torch"

    def describe(self, ckpt, dtype: str, device: str, trust_remote_code: bool = False,
                 trust_pickle: bool = False) -> ModelInfo:
        """Linear shapes from the config alone (meta tensors: no weights are read)."""
        import torch

        from optkit.engines.llamacpp.convert import check_architecture, hf_folder

        if ckpt.kind == "gguf":
            check_architecture(ckpt.location)
            folder = Path(hf_folder(ckpt, say=_say).location)
            _checked_tokenizer(folder, ckpt.given)  # a tokenizer that disagrees with llama.cpp's: exit 2 here
        elif ckpt.kind != "hub":
            _check_weights_format(Path(ckpt.location), trust_pickle)
            _checked_tokenizer(Path(ckpt.location), ckpt.given)  # a folder optkit converted from a GGUF
        _, model = _config(ckpt, trust_remote_code)
        linears = {n: (m.out_features, m.in_features) for n, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear)}
        fmt = "hf" if ckpt.format == "gguf" else ckpt.format
        return ModelInfo(linears=linears, dtype=dtype, device=device, format=fmt)

    def check_served(self, info: ModelInfo, steps: list) -> list[str]:
        # FP8 here: transformers only dequantizes it on a CPU, so neither its speed nor its numerics are FP8's
        if info.format == "compressed-tensors" and not info.device.startswith("cuda") and any(
                getattr(params, "scheme", None) == "FP8_DYNAMIC" for _, params in steps):
            return ["FP8 (FP8_DYNAMIC) cannot be evaluated as it ships on a CPU-only run in PyTorch (no fp8 kernels; "
                    "transformers would only dequantize it); run with device: cuda on an sm_89+ GPU, serve it with "
                    "engine: vllm on a CPU with AMX, or use scheme W8A8 (int8) or W4A16 on CPU"]
        return []

    def load(self, ckpt, dtype: str = "float32", device: str = "cpu", trust_pickle: bool = False,
             trust_remote_code: bool = False) -> TorchLM:
        import torch
        from transformers import AutoModelForCausalLM

        from optkit.engines.llamacpp.convert import hf_folder

        ckpt = hf_folder(ckpt)
        kwargs = dict(trust_remote_code=trust_remote_code, use_safetensors=None if trust_pickle else True,
                      revision=ckpt.pinned() if ckpt.kind == "hub" else None)
        if ckpt.kind != "hub":
            _check_weights_format(Path(ckpt.location), trust_pickle)
        try:
            model = AutoModelForCausalLM.from_pretrained(ckpt.location, dtype=getattr(torch, dtype), **kwargs)
            tokenizer = _tokenizer(ckpt, trust_remote_code)
        except OSError as exc:
            where = "the Hugging Face hub" if ckpt.kind == "hub" else ckpt.location
            raise RunError(
                f"cannot load {ckpt.given!r} from {where} ({str(exc).splitlines()[0]}); "
                "check the id and network, or pass a local folder / .gguf file"
            ) from exc
        model.eval()
        if getattr(model, "hf_quantizer", None) is None:  # quantized loads are placed by their quantizer
            model.to(device)
        lm = TorchLM(model, tokenizer, device, fmt=ckpt.format)
        if ckpt.kind != "hub":
            from optkit.engines.llamacpp.convert import check_folder

            checked = check_folder(Path(ckpt.location), tokenizer, ckpt.given)  # a folder optkit converted
            lm.tokenizer_checks = [checked] if checked else []
        if ckpt.format == "compressed-tensors" and ckpt.kind != "hub":
            lm.source_folder = Path(ckpt.location)  # its packed weights: what it costs on disk, what save copies
        return lm
