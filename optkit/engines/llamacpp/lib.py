"""llama-cpp-python's C library, loaded once per process (its backend initialised and its log kept, not printed),
and the few calls every llama.cpp piece needs before there is a LoadedModel: a model pointer, the version, the
thread count. engine.py (the engine) and vocab.py (the file's own tokenizer) both stand on this."""

from __future__ import annotations

import ctypes
import os

from optkit.errors import RunError

ENVIRONMENT: dict[str, str] = {}  # variables read once, when the library loads: the worker sets them first
_state: dict = {}
_log: list[str] = []  # llama.cpp's last warnings and errors: failure messages quote them


def library():
    """llama_cpp, loaded once per process: the backend initialised and its log kept, not printed."""
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    import llama_cpp

    if "log" not in _state:
        def keep(level, text, _user):
            if level >= 3 or (level == 5 and _log):  # WARN, ERROR, and their continuation lines
                _log.append((text or b"").decode(errors="replace").rstrip())
                del _log[:-20]
        _state["log"] = llama_cpp.llama_log_callback(keep)
        llama_cpp.llama_log_set(_state["log"], ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return llama_cpp


def last_error() -> str:
    """llama.cpp's reason: the last "error loading model: ..." line where there is one (the lines after it only
    say that loading failed), else its last warning or error."""
    for line in reversed(_log):
        if "error loading model:" in line:
            return line.split("error loading model:", 1)[1].strip()
    return next((line for line in reversed(_log) if line.strip()), "no message from llama.cpp")


def version() -> str:
    from importlib.metadata import version as dist_version

    return dist_version("llama-cpp-python")


def default_threads() -> int:
    """OMP_NUM_THREADS where it is set (torch takes its thread count from it too, so engines compare at equal
    threads), else the cores this process may use."""
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_model(path, gpu: bool = False, vocab_only: bool = False):
    """A llama_model pointer; RunError with llama.cpp's own reason when it refuses the file."""
    lib = library()
    params = lib.llama_model_default_params()
    params.n_gpu_layers = -1 if gpu else 0
    params.vocab_only = vocab_only
    model = lib.llama_model_load_from_file(os.fsencode(str(path)), params)
    if not model:
        raise RunError(f"llama.cpp {version()} cannot load {path}: {last_error()}")
    return model
