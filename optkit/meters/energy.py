"""Energy counters: NVML's total-energy counter on NVIDIA GPUs, RAPL on CPUs where readable,
otherwise 'unavailable' with the reason. Never an invented number."""

from __future__ import annotations

from pathlib import Path

RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


class EnergyCounter:
    """read() -> joules since an arbitrary origin, or None; `reason` says why when unavailable."""

    def __init__(self, device: str):
        self.source = None
        self.reason = None
        self._read = None
        if device.startswith("cuda"):
            self._nvml(device)
        else:
            self._rapl()

    def _nvml(self, device: str) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            index = int(device.split(":")[1]) if ":" in device else 0
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except ImportError:
            self.reason = "NVML bindings not installed (pip install nvidia-ml-py)"
            return
        except Exception as exc:  # NVMLError subclasses: no driver, not supported on this GPU, ...
            self.reason = f"NVML energy counter not available: {exc}"
            return
        self.source = "NVML total energy (GPU board only; idle power not subtracted)"
        self._read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0

    def _rapl(self) -> None:
        try:
            RAPL.read_text()
        except FileNotFoundError:
            self.reason = "no RAPL counter on this machine (/sys/class/powercap absent) and no NVIDIA GPU"
            return
        except OSError as exc:
            self.reason = f"RAPL counter not readable ({exc.strerror}); it usually needs root"
            return
        self.source = "RAPL package-0 (whole CPU package; other processes included)"
        self._read = lambda: int(RAPL.read_text()) / 1e6

    @property
    def available(self) -> bool:
        return self._read is not None

    def read(self) -> float | None:
        return self._read() if self._read else None
