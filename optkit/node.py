"""What machine a variant ran on, and the hardware class its speed is comparable within: GPU count and model on
cuda, CPU model and benchmark threads on cpu. A machine's OPTKIT_HARDWARE_CLASS names its class outright (for
differences optkit cannot see, such as power limits or memory clocks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from optkit.environment import _cpu_name
from optkit.results import NodeRecord

CLASS_ENV = "OPTKIT_HARDWARE_CLASS"


def gpus() -> tuple[str | None, int, str | None]:
    """(model names, count, driver) of the GPUs this process may use (CUDA_VISIBLE_DEVICES), from nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None, 0, None
    rows = [[cell.strip() for cell in line.split(",")] for line in out.splitlines() if line.count(",") >= 3]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # indices or UUIDs; Ray sets indices
        wanted = {v.strip() for v in visible.split(",") if v.strip()}
        rows = [r for r in rows if r[0] in wanted or r[1] in wanted]
    if not rows:
        return None, 0, None
    return " + ".join(sorted({r[2] for r in rows})), len(rows), rows[0][3]


def _threads() -> int | None:
    if "torch" in sys.modules:  # the worker: what torch really uses
        return sys.modules["torch"].get_num_threads()
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return int(omp) if omp.isdigit() else None


def hardware_class(rec: NodeRecord) -> str:
    named = os.environ.get(CLASS_ENV, "").strip()
    if named:
        return named
    if rec.gpu_count:
        return f"{rec.gpu_count}x {rec.gpu_model}"
    return f"{rec.cpu_model or 'unknown CPU'}, {rec.threads or '?'} threads"


def facts(device: str, threads: int | None = None, cpus: int | None = None, node_id: str | None = None) -> NodeRecord:
    """This machine as seen by a worker on `device`; threads: the benchmark's (default: torch's, else OMP's)."""
    model, count, driver = gpus() if device.startswith("cuda") else (None, 0, None)
    rec = NodeRecord(host=socket.gethostname(), cpu_model=_cpu_name(), cpus=cpus or os.cpu_count(),
                     threads=threads or _threads(), gpu_model=model, gpu_count=count, gpu_driver=driver,
                     node_id=node_id, hardware_class="")
    rec.hardware_class = hardware_class(rec)
    return rec
