"""What the numbers were measured on: versions, device, threads, git commit."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

from optkit.results import Environment
from optkit.version import __version__


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def environment(device: str) -> Environment:
    import torch

    # the driver of a cluster run may have no GPU itself; the variants record their own nodes
    gpu = device.startswith("cuda") and torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if gpu else _cpu_name()
    return Environment(
        optkit=__version__,
        python=sys.version.split()[0],
        torch=_version("torch"),
        transformers=_version("transformers"),
        device=device,
        device_name=name,
        threads=torch.get_num_threads(),
        git_commit=_git_commit(),
        platform=platform.platform(),
    )
