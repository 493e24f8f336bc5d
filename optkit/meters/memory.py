"""Peak memory of the measured region: torch's allocator peak on CUDA, peak RSS on CPU.

On Linux the RSS high-water mark is reset before the region (/proc/self/clear_refs), so loading and
quantizing the model do not count; where that is impossible the lifetime peak is reported and labelled. An
engine that computes in processes of its own (vLLM: engine core and worker) is counted whole: the peaks of the
worker and every process under it, summed (an upper bound of their simultaneous peak).
"""

from __future__ import annotations

import resource
import sys


class PeakMemory:
    def __init__(self, device: str):
        self.device = device
        self.mb: float | None = None
        self.source = ""

    def __enter__(self):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            _release_freed_memory()
            try:
                for pid in tree():
                    with open(f"/proc/{pid}/clear_refs", "w") as fh:
                        fh.write("5")
                self.source = "peak RSS during the benchmark (VmHWM)"
            except OSError:
                self.source = "peak RSS of the whole process, loading included"
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            import torch

            self.mb = torch.cuda.max_memory_allocated() / 2**20
            self.source = "torch.cuda.max_memory_allocated during the benchmark"
            return False
        procs = tree()
        hwm = _vm_hwm_kb()
        if hwm is not None:
            self.mb = (hwm + sum(_vm_hwm_kb(pid) or 0 for pid in procs[1:])) / 1024
            if len(procs) > 1:
                self.source += f", summed over this process and its {len(procs) - 1} child processes"
        else:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.mb = rss / 2**20 if sys.platform == "darwin" else rss / 1024
        return False


def _release_freed_memory() -> None:
    """Hand memory freed by earlier work (model copies, calibration) back to the OS before the high-water
    mark is reset: otherwise RSS still holds it and the 'peak' describes the past, not inference."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def tree() -> list[str]:
    """This process and every process under it ("self" first), from /proc's children lists (Linux)."""
    out, todo = ["self"], ["self"]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/task/{pid if pid != 'self' else _own()}/children") as fh:
                kids = fh.read().split()
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def _own() -> str:
    import os

    return str(os.getpid())


def _vm_hwm_kb(pid: str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
