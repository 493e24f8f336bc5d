"""Energy counters: NVML's total-energy counter on NVIDIA GPUs, RAPL on CPUs where readable,
otherwise 'unavailable' with the reason. Never an invented number.

Two checks ride along where the hardware allows: the idle power, measured before the benchmark, so the energy
the model itself costs (above idle) is reported next to the board's total; and on NVML a power-sampling thread
during decode, whose integral must agree with the counter (a counter that silently reads zero or drifts shows
up as disagreement).
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


class EnergyCounter:
    """read() -> joules since an arbitrary origin, or None; `reason` says why when unavailable."""

    def __init__(self, device: str):
        self.source = None
        self.reason = None
        self._read = None
        self.power = None  # () -> instantaneous watts, where the hardware reports it (NVML)
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
        self.source = "NVML total energy counter (GPU board only)"
        self._read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0
        self.power = lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # watts

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

    def idle_watts(self, seconds: float = 1.0) -> float | None:
        """Power with nothing of ours running: median of power samples (NVML) or counter delta / time."""
        if self.power is not None:
            samples = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                samples.append(self.power())
                time.sleep(0.02)
            return statistics.median(samples)
        if self._read is None:
            return None
        e0, t0 = self._read(), time.perf_counter()
        time.sleep(seconds)
        e1, t1 = self._read(), time.perf_counter()
        return (e1 - e0) / (t1 - t0) if e1 >= e0 else None


class PowerSampler:
    """Integrates instantaneous power (trapezoid) on a thread while the block runs: an independent estimate
    of the energy the counter reports. joules is None where no power reading exists."""

    def __init__(self, counter: EnergyCounter, interval: float = 0.02):
        self.power, self.interval, self.joules = counter.power, interval, None
        self._stop = threading.Event()

    def _run(self) -> None:
        last_t, last_w, total = time.perf_counter(), self.power(), 0.0
        while not self._stop.wait(self.interval):
            t, w = time.perf_counter(), self.power()
            total += (w + last_w) / 2 * (t - last_t)
            last_t, last_w = t, w
        t, w = time.perf_counter(), self.power()
        self.joules = total + (w + last_w) / 2 * (t - last_t)

    def __enter__(self):
        if self.power is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.power is not None:
            self._stop.set()
            self._thread.join()
        return False
