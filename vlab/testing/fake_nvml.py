"""A fake NVML with pynvml's function names, for testing the GPU sampler without a GPU.

In process: `FakeNvmlLib(gpus=[FakeGpu(...)])` and pass `Nvml(lib)` to the sampler. In a subprocess: set
`VLAB_NVML_MODULE=vlab.testing.fake_nvml`; the module's functions then act on `DEFAULT`, configured from the
environment: `VLAB_FAKE_NVML_GPUS` (count, default 1), `VLAB_FAKE_NVML_FAIL=init` (nvmlInit raises
NVMLError_LibraryNotFound), `VLAB_FAKE_NVML_NO_ENERGY=1` (the energy counter is NotSupported).

Every fake GPU draws a constant `power_mw`; its energy counter advances by `energy_step_mj` on every read (so tests
know every value), or, with `energy_step_mj=None`, by power × wall time since creation, as a real one does.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TEMPERATURE_GPU = 0


class NVMLError(Exception):
    """pynvml.NVMLError."""


class NVMLError_LibraryNotFound(NVMLError):
    def __str__(self) -> str:
        return "NVML Shared Library Not Found"


class NVMLError_NotSupported(NVMLError):
    def __str__(self) -> str:
        return "Not Supported"


@dataclass
class FakeGpu:
    """One fake device. Units as NVML reports them: bytes, percent, mW, mJ, MHz, °C."""

    name: str = "NVIDIA H200"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    mem_total: int = 150_754_820_096
    mem_used: int = 10 * (1 << 30)
    util: int = 50
    power_mw: int = 100_000
    energy_mj: int = 1_000_000
    energy_step_mj: int | None = 500
    energy_supported: bool = True
    sm_clock: int = 1980
    mem_clock: int = 3201
    max_sm_clock: int = 1980
    max_mem_clock: int = 3201
    bus_width: int = 6016
    temp: int = 40
    power_limit_mw: int = 700_000
    processes: int = 1
    created: float = field(default_factory=time.time)

    def read_energy(self) -> int:
        if not self.energy_supported:
            raise NVMLError_NotSupported()
        if self.energy_step_mj is None:
            return self.energy_mj + int(self.power_mw * (time.time() - self.created))
        value = self.energy_mj
        self.energy_mj += self.energy_step_mj
        return value


class FakeNvmlLib:
    """An object with pynvml's functions (those the sampler calls) over a list of FakeGpu."""

    NVMLError = NVMLError
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM

    def __init__(self, gpus: list[FakeGpu] | None = None, fail_init: bool = False, driver: str = "580.159.04"):
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.fail_init = fail_init
        self.driver = driver
        self.initialized = 0
        self.calls = 0

    def _gpu(self, handle: Any) -> FakeGpu:
        if not self.initialized:
            raise NVMLError("Uninitialized")
        self.calls += 1
        return self.gpus[handle]

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise NVMLError_LibraryNotFound()
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self.initialized = max(0, self.initialized - 1)

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.gpus):
            raise NVMLError("Invalid Argument")
        return index

    def nvmlDeviceGetName(self, h: int) -> str:
        return self._gpu(h).name

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self._gpu(h).uuid

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        g = self._gpu(h)
        return SimpleNamespace(total=g.mem_total, used=g.mem_used, free=g.mem_total - g.mem_used)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=self._gpu(h).util, memory=0)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return self._gpu(h).power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        return self._gpu(h).read_energy()

    def nvmlDeviceGetClockInfo(self, h: int, which: int) -> int:
        g = self._gpu(h)
        return g.sm_clock if which == NVML_CLOCK_SM else g.mem_clock

    def nvmlDeviceGetMaxClockInfo(self, h: int, which: int) -> int:
        g = self._gpu(h)
        return g.max_sm_clock if which == NVML_CLOCK_SM else g.max_mem_clock

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return self._gpu(h).temp

    def nvmlDeviceGetPowerManagementLimit(self, h: int) -> int:
        return self._gpu(h).power_limit_mw

    def nvmlDeviceGetMemoryBusWidth(self, h: int) -> int:
        return self._gpu(h).bus_width

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=1000 + i) for i in range(self._gpu(h).processes)]


def _from_env() -> FakeNvmlLib:
    n = int(os.environ.get("VLAB_FAKE_NVML_GPUS", "1"))
    energy = os.environ.get("VLAB_FAKE_NVML_NO_ENERGY") != "1"
    gpus = [FakeGpu(uuid=f"GPU-{i:08d}-fake", energy_step_mj=None, energy_supported=energy) for i in range(n)]
    return FakeNvmlLib(gpus, fail_init=os.environ.get("VLAB_FAKE_NVML_FAIL") == "init")


DEFAULT = _from_env()


def __getattr__(name: str) -> Any:
    """Module-level pynvml functions: those of DEFAULT."""
    if name.startswith("nvml"):
        return getattr(DEFAULT, name)
    raise AttributeError(name)
