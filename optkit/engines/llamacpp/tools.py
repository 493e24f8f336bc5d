"""What the gguf.* methods borrow from llama.cpp itself: its HF -> GGUF converter (convert_hf_to_gguf.py with
the gguf-py it ships, from the llama-cpp-python sdist, put into the venv by `make setup`) and the importance
matrix (imatrix) llama.cpp's quantizer weighs rounding errors with, collected from llama.cpp's own matrix
multiplications as its llama-imatrix tool does.

The converter runs in a fresh interpreter (`python -m optkit.engines.llamacpp.tools CONVERTER MODEL OUT OUTTYPE`):
it needs its own gguf-py first on sys.path, and a process that has imported PyPI's gguf (transformers does)
cannot unimport it.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

from optkit.errors import BadInput, RunError

CONVERTER_ENV = "OPTKIT_LLAMACPP_CONVERTER"


def converter_dir() -> Path:
    """Where llama.cpp's converter for the installed llama-cpp-python is; BadInput with the fix when absent."""
    from optkit.engines.llamacpp.lib import version

    env = os.environ.get(CONVERTER_ENV)
    path = Path(env) if env else Path(sys.prefix) / "share" / f"llama.cpp-converter-{version()}"
    if not (path / "convert_hf_to_gguf.py").is_file():
        raise BadInput(f"gguf.export needs llama.cpp's converter (convert_hf_to_gguf.py, conversion/, gguf-py/ from "
                       f"the llama-cpp-python {version()} sdist) at {path}; run make setup, or set {CONVERTER_ENV} "
                       "to such a folder")
    return path


def convert(model_dir: Path, out: Path, outtype: str) -> Path:
    """model_dir (an HF folder) -> out (a GGUF file) with llama.cpp's converter; its log goes to ours only when
    it fails."""
    cmd = [sys.executable, "-m", "optkit.engines.llamacpp.tools", str(converter_dir()), str(model_dir), str(out),
           outtype]
    from optkit.isolate import die_with_parent

    done = subprocess.run(cmd, capture_output=True, text=True,  # dies with its worker (isolate.py)
                          preexec_fn=die_with_parent if sys.platform == "linux" else None)
    if done.returncode != 0 or not out.is_file():
        tail = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()][-15:]
        print("\n".join(tail), file=sys.stderr, flush=True)
        raise RunError(f"llama.cpp's converter failed (exit {done.returncode}): {tail[-1] if tail else 'no output'}")
    return out


def _pre_from_tokenizer_json(model_dir: Path) -> str | None:
    """The llama.cpp pre-tokenizer a tokenizer.json's own pre-tokenizer is, where that is certain: a plain
    ByteLevel with its regex is the GPT-2 split. The converter knows pre-tokenizers by the ids they give a test
    text, which a tokenizer trained here (the tests' tiny ones) never matches."""
    try:
        pre = json.loads((model_dir / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
    except (OSError, ValueError):
        return None
    plain = pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space")
    return "gpt-2" if plain else None


def _run_converter(converter: str, model_dir: str, out: str, outtype: str) -> None:
    """The child side: llama.cpp's own main(), with one fallback for pre-tokenizers it knows only by hash."""
    if "gguf" in sys.modules:
        raise RuntimeError("PyPI's gguf is already imported; the converter needs its own")
    sys.path.insert(0, converter)
    cli = importlib.import_module("convert_hf_to_gguf")  # puts its gguf-py before site-packages
    text_model = importlib.import_module("conversion").TextModel
    original = text_model.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            known = _pre_from_tokenizer_json(Path(model_dir))
            if known is None:
                raise
            return known

    text_model.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outfile", out, "--outtype", outtype]
    cli.main()


class _Tensor(ctypes.Structure):
    """ggml_tensor as ggml.h of the pinned llama.cpp lays it out (GGML_MAX_DIMS 4, GGML_MAX_SRC 10, GGML_MAX_NAME 64);
    imatrix_supported() checks the size against the library before anything reads through it."""


_Tensor._fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                    ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16),
                    ("flags", ctypes.c_int32), ("src", ctypes.POINTER(_Tensor) * 10),
                    ("view_src", ctypes.POINTER(_Tensor)), ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p),
                    ("name", ctypes.c_char * 64), ("extra", ctypes.c_void_p), ("padding", ctypes.c_char * 8)]


def _ggml():
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_tensor_overhead.restype = ctypes.c_size_t
    lib.ggml_op_desc.argtypes, lib.ggml_op_desc.restype = [ctypes.POINTER(_Tensor)], ctypes.c_char_p
    return lib


def imatrix_supported() -> bool:
    """Whether this llama.cpp's tensors have the layout the collector reads (ggml_object is 32 bytes)."""
    try:
        return _ggml().ggml_tensor_overhead() == 32 + ctypes.sizeof(_Tensor)
    except OSError:
        return False


class Imatrix:
    """cb_eval for a llama.cpp context: for every matrix multiplication by a `blk.*` weight, the sum over tokens
    of each input column's squared activation; result() is their mean per weight, what llama_model_quantize
    takes (and llama-imatrix writes)."""

    def __init__(self):
        import llama_cpp

        self.ggml, self.sums, self.counts = _ggml(), {}, {}
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._seen)

    def _seen(self, ptr, ask, _user) -> bool:
        import numpy as np

        t = ctypes.cast(ptr, ctypes.POINTER(_Tensor)).contents
        if self.ggml.ggml_op_desc(ctypes.byref(t)) != b"MUL_MAT":
            return not ask
        weight, x = t.src[0].contents, t.src[1].contents
        name = weight.name.decode()
        if ask:  # the same filter as llama-imatrix: layer weights, float32 activations
            return name.startswith("blk.") and x.type == 0
        if x.nb[0] != 4 or x.nb[1] != 4 * x.ne[0]:  # a strided view: not read (llama-imatrix would copy it)
            return True
        rows = x.ne[1] * x.ne[2] * x.ne[3]
        acts = np.ctypeslib.as_array(ctypes.cast(x.data, ctypes.POINTER(ctypes.c_float)), shape=(rows, x.ne[0]))
        square = np.einsum("ij,ij->j", acts, acts, dtype=np.float64)
        self.sums[name] = self.sums.get(name, 0.0) + square
        self.counts[name] = self.counts.get(name, 0) + rows
        return True

    def result(self) -> dict:
        import numpy as np

        return {k: (v / self.counts[k]).astype(np.float32) for k, v in self.sums.items()}


if __name__ == "__main__":
    _run_converter(*sys.argv[1:5])
