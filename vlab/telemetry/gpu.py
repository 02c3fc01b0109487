"""Sample the GPUs through NVML during a run, in a separate process, into `RUN_DIR/gpu_metrics.csv`.

`start_gpu_sampler(run_dir, interval_s)` returns at once: it starts `python -m vlab.telemetry.gpu sample --out
RUN_DIR/gpu_metrics.csv --interval S` in its own process group, so NVML calls never run on the load generator's
gevent hub. `.stop()` sends SIGTERM; the sampler takes one last sample, writes its note and exits. It also exits when
its parent does.

Files written in the run folder:

- `gpu_metrics.csv`, one row per GPU per sample (long format), columns `CSV_COLUMNS`:
  `t_s` wall-clock Unix time (s) at the middle of that GPU's reads; `gpu` the NVML index; `util_pct` the percent of
  time over NVML's last sample period (1/6 s to 1 s, by product) in which a kernel ran (nvmlDeviceGetUtilizationRates
  .gpu; not how full the SMs were); `mem_used_bytes`, `mem_total_bytes` (nvmlDeviceGetMemoryInfo, bytes);
  `power_w` (nvmlDeviceGetPowerUsage, mW → W; on recent drivers a ~1 s average); `energy_j` (nvmlDeviceGetTotal
  EnergyConsumption, mJ since the driver loaded → J; empty when unsupported); `sm_clock_mhz`, `mem_clock_mhz`
  (nvmlDeviceGetClockInfo, MHz); `temp_c` (nvmlDeviceGetTemperature, °C). An empty cell is a value NVML did not give.
- `gpu_metrics.json`: `{"available": bool, "reason": ..., "driver", "cuda_visible_devices", "devices": [{index,
  cuda_index, name, uuid, mem_total_bytes, power_limit_w, max_sm_clock_mhz, max_mem_clock_mhz, mem_bus_width_bits,
  nvml_bandwidth_bytes_per_s (= max memory clock × 2 × bus width / 8), energy_counter, compute_processes, card}],
  "samples", "errors", "last_error", "cost": {cpu_ms_mean, cpu_ms_p95, wall_ms_mean}}` (cost per sample of all GPUs,
  read and written). `card` is the matching entry of `vlab.core.hardware` (None when unknown). Without NVML or a GPU:
  `available: false` with the reason, no CSV, exit code 0.

Which GPUs: those CUDA_VISIBLE_DEVICES makes visible (indices or GPU-UUID prefixes, up to the first invalid entry, as
CUDA reads it); all of them when it is unset. MIG instances are not sampled apart (their parent GPU is).

NVML is reached only through `Nvml`, an adapter over a pynvml-like module (nvidia-ml-py's `pynvml`), so tests inject a
fake one; `VLAB_NVML_MODULE=some.module` makes the sampler process import that module instead of pynvml.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from vlab.core.hardware import card_for
from vlab.telemetry.process import SamplerProcess, sampling_cost, spawn_sampler, write_note

GPU_CSV = "gpu_metrics.csv"
GPU_JSON = "gpu_metrics.json"
GPU_LOG = "gpu_metrics.log"
NVML_MODULE_ENV = "VLAB_NVML_MODULE"
CSV_COLUMNS: tuple[str, ...] = (
    "t_s",
    "gpu",
    "util_pct",
    "mem_used_bytes",
    "mem_total_bytes",
    "power_w",
    "energy_j",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "temp_c",
)
NAN = math.nan


# ---------------------------------------------------------------------------------------------------- the adapter
class NvmlUnavailable(Exception):
    """NVML cannot be used here; the message is the one-line reason for the note."""


class Nvml:
    """The NVML calls the sampler makes, on a pynvml-like module or object `lib` (functions named as in pynvml).

    Reads that NVML refuses (NVMLError, e.g. NotSupported) give NaN; anything else propagates.
    """

    CLOCK_SM = 1  # NVML_CLOCK_SM
    CLOCK_MEM = 2  # NVML_CLOCK_MEM
    TEMPERATURE_GPU = 0  # NVML_TEMPERATURE_GPU

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.error: type[BaseException] = getattr(lib, "NVMLError", Exception)

    @classmethod
    def load(cls, module: str | None = None) -> Nvml:
        """Import `module` (default: $VLAB_NVML_MODULE, else pynvml). Raises NvmlUnavailable if it is missing."""
        name = module or os.environ.get(NVML_MODULE_ENV) or "pynvml"
        try:
            return cls(importlib.import_module(name))
        except ImportError as exc:
            raise NvmlUnavailable(f"{name} not importable ({exc}); install nvidia-ml-py") from None

    def init(self) -> None:
        """nvmlInit. Raises NvmlUnavailable with NVML's own words (no library, no driver, no permission)."""
        try:
            self.lib.nvmlInit()
        except self.error as exc:
            raise NvmlUnavailable(f"NVML not usable: {exc} ({type(exc).__name__})") from None
        except OSError as exc:
            raise NvmlUnavailable(f"NVML not usable: {exc}") from None

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.lib.nvmlShutdown()

    def _get(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self.error:
            return None

    @staticmethod
    def _text(value: Any) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def count(self) -> int:
        return int(self.lib.nvmlDeviceGetCount())

    def handle(self, index: int) -> Any:
        return self.lib.nvmlDeviceGetHandleByIndex(index)

    def driver(self) -> str | None:
        value = self._get(self.lib.nvmlSystemGetDriverVersion)
        return self._text(value) if value is not None else None

    def name(self, h: Any) -> str:
        value = self._get(lambda: self.lib.nvmlDeviceGetName(h))
        return self._text(value) if value is not None else "unknown"

    def uuid(self, h: Any) -> str | None:
        value = self._get(lambda: self.lib.nvmlDeviceGetUUID(h))
        return self._text(value) if value is not None else None

    def memory(self, h: Any) -> tuple[float, float]:
        """(used, total) bytes."""
        info = self._get(lambda: self.lib.nvmlDeviceGetMemoryInfo(h))
        return (float(info.used), float(info.total)) if info is not None else (NAN, NAN)

    def util_pct(self, h: Any) -> float:
        rates = self._get(lambda: self.lib.nvmlDeviceGetUtilizationRates(h))
        return float(rates.gpu) if rates is not None else NAN

    def power_w(self, h: Any) -> float:
        mw = self._get(lambda: self.lib.nvmlDeviceGetPowerUsage(h))
        return float(mw) / 1000.0 if mw is not None else NAN

    def energy_j(self, h: Any) -> float:
        """Total energy since the driver loaded, mJ → J; NaN where unsupported (pre-Volta, some vGPUs)."""
        fn = getattr(self.lib, "nvmlDeviceGetTotalEnergyConsumption", None)
        mj = self._get(lambda: fn(h)) if fn is not None else None
        return float(mj) / 1000.0 if mj is not None else NAN

    def clock_mhz(self, h: Any, which: int) -> float:
        value = self._get(lambda: self.lib.nvmlDeviceGetClockInfo(h, which))
        return float(value) if value is not None else NAN

    def max_clock_mhz(self, h: Any, which: int) -> float:
        value = self._get(lambda: self.lib.nvmlDeviceGetMaxClockInfo(h, which))
        return float(value) if value is not None else NAN

    def temp_c(self, h: Any) -> float:
        value = self._get(lambda: self.lib.nvmlDeviceGetTemperature(h, self.TEMPERATURE_GPU))
        return float(value) if value is not None else NAN

    def power_limit_w(self, h: Any) -> float:
        mw = self._get(lambda: self.lib.nvmlDeviceGetPowerManagementLimit(h))
        return float(mw) / 1000.0 if mw is not None else NAN

    def bus_width_bits(self, h: Any) -> float:
        fn = getattr(self.lib, "nvmlDeviceGetMemoryBusWidth", None)
        value = self._get(lambda: fn(h)) if fn is not None else None
        return float(value) if value is not None else NAN

    def compute_processes(self, h: Any) -> int | None:
        """How many processes hold a compute context on the GPU (None where NVML cannot say, e.g. in a container)."""
        fn = getattr(self.lib, "nvmlDeviceGetComputeRunningProcesses", None)
        procs = self._get(lambda: fn(h)) if fn is not None else None
        return len(procs) if procs is not None else None


# --------------------------------------------------------------------------------------------- which GPUs to read
def visible_indices(count: int, uuids: list[str | None], env: str | None) -> tuple[list[int], str]:
    """NVML indices of the GPUs CUDA_VISIBLE_DEVICES=`env` exposes, in CUDA order, and a note on how it was read.

    Unset: all `count` GPUs. Entries are indices or UUID prefixes ("GPU-8d5f..."); as in CUDA, the list ends at the
    first entry that names no GPU (so "" or "-1" hides them all). MIG entries are not resolved: all GPUs are read.
    """
    if env is None:
        return list(range(count)), "CUDA_VISIBLE_DEVICES unset: all GPUs"
    out: list[int] = []
    for raw in env.split(","):
        token = raw.strip()
        if token.startswith("MIG-"):
            return list(range(count)), f"CUDA_VISIBLE_DEVICES={env!r} names MIG instances: all GPUs read"
        if token.isdigit() and int(token) < count:
            index = int(token)
        else:
            matches = [i for i, u in enumerate(uuids) if token and u and u.startswith(token)]
            if len(matches) != 1:
                break
            index = matches[0]
        if index in out:
            break
        out.append(index)
    return out, f"CUDA_VISIBLE_DEVICES={env!r}"


@dataclass
class Device:
    """One GPU being sampled."""

    index: int
    cuda_index: int
    handle: Any


def _card_entry(name: str) -> dict[str, Any] | None:
    card = card_for(name)
    if card is None:
        return None
    return {
        "key": card.key,
        "memory_bytes": card.memory_bytes,
        "bandwidth_bytes_per_s": card.bandwidth_bytes_per_s,
        "peak_flops": card.peak_flops,
    }


def describe(nvml: Nvml, dev: Device) -> dict[str, Any]:
    """The static facts of one GPU for the note."""
    h = dev.handle
    name = nvml.name(h)
    _, total = nvml.memory(h)
    max_mem = nvml.max_clock_mhz(h, Nvml.CLOCK_MEM)
    bus = nvml.bus_width_bits(h)
    bandwidth = max_mem * 1e6 * 2 * bus / 8 if math.isfinite(max_mem) and math.isfinite(bus) else None
    return {
        "index": dev.index,
        "cuda_index": dev.cuda_index,
        "name": name,
        "uuid": nvml.uuid(h),
        "mem_total_bytes": _num(total),
        "power_limit_w": _num(nvml.power_limit_w(h)),
        "max_sm_clock_mhz": _num(nvml.max_clock_mhz(h, Nvml.CLOCK_SM)),
        "max_mem_clock_mhz": _num(max_mem),
        "mem_bus_width_bits": _num(bus),
        "nvml_bandwidth_bytes_per_s": bandwidth,
        "energy_counter": math.isfinite(nvml.energy_j(h)),
        "compute_processes": nvml.compute_processes(h),
        "card": _card_entry(name),
    }


def read_row(nvml: Nvml, dev: Device) -> list[float]:
    """One CSV row (CSV_COLUMNS) for `dev`; `t_s` is the middle of its reads."""
    h = dev.handle
    t0 = time.time()
    util = nvml.util_pct(h)
    used, total = nvml.memory(h)
    power = nvml.power_w(h)
    energy = nvml.energy_j(h)
    sm = nvml.clock_mhz(h, Nvml.CLOCK_SM)
    mem = nvml.clock_mhz(h, Nvml.CLOCK_MEM)
    temp = nvml.temp_c(h)
    t1 = time.time()
    return [(t0 + t1) / 2, float(dev.index), util, used, total, power, energy, sm, mem, temp]


def _num(value: float) -> float | int | None:
    """JSON-friendly: None for NaN, an int for a whole number."""
    if not math.isfinite(value):
        return None
    return int(value) if value == int(value) else value


def _cell(value: float) -> str:
    if not math.isfinite(value):
        return ""
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else f"{value:.6f}".rstrip("0").rstrip(".")


@contextlib.contextmanager
def opened(nvml: Nvml) -> Iterator[Nvml]:
    """nvmlInit … nvmlShutdown."""
    nvml.init()
    try:
        yield nvml
    finally:
        nvml.shutdown()


def open_devices(nvml: Nvml, env: str | None) -> tuple[list[Device], str]:
    """The visible GPUs' handles (after init) and the note on CUDA_VISIBLE_DEVICES. Raises NvmlUnavailable when
    there is none."""
    count = nvml.count()
    if count == 0:
        raise NvmlUnavailable("NVML sees no GPU")
    handles = [nvml.handle(i) for i in range(count)]
    indices, how = visible_indices(count, [nvml.uuid(h) for h in handles], env)
    if not indices:
        raise NvmlUnavailable(f"{how} hides every GPU")
    return [Device(i, k, handles[i]) for k, i in enumerate(indices)], how


# ------------------------------------------------------------------------------------------------------ sampling
class _Stop(Exception):
    """Raised by the SIGTERM handler while the sampler sleeps between samples."""


def sample_loop(
    out_csv: Path,
    interval_s: float,
    nvml: Nvml | None = None,
    *,
    max_samples: int | None = None,
    install_signals: bool = True,
) -> int:
    """Sample every visible GPU every `interval_s` until SIGTERM/SIGINT (then once more), `max_samples`, or the parent
    exits; write the CSV and the note. Returns 0 always (an unusable NVML is a note, not a failure).

    Ticks are at start + k·interval_s; a late sample skips the ticks it missed.
    """
    note_path = out_csv.with_name(GPU_JSON)
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    note: dict[str, Any] = {"available": False, "interval_s": interval_s, "cuda_visible_devices": env}
    state = {"stop": False, "sleeping": False}

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        state["stop"] = True
        if state["sleeping"]:
            raise _Stop

    if install_signals:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    try:
        nvml = nvml or Nvml.load()
        nvml.init()
    except NvmlUnavailable as exc:
        note["reason"] = str(exc)
        write_note(note_path, note)
        return 0
    try:
        try:
            devices, how = open_devices(nvml, env)
            note.update(
                driver=nvml.driver(),
                visible=how,
                devices=[describe(nvml, d) for d in devices],
            )
        except NvmlUnavailable as exc:
            note["reason"] = str(exc)
            write_note(note_path, note)
            return 0
        except nvml.error as exc:
            note["reason"] = f"NVML failed listing the GPUs: {exc}"
            write_note(note_path, note)
            return 0
        note.update(available=True, reason="", started_at=time.time())
        write_note(note_path, note)
        _loop(nvml, devices, out_csv, interval_s, note, state, max_samples)
    finally:
        nvml.shutdown()
    write_note(note_path, note)
    return 0


def _loop(
    nvml: Nvml,
    devices: list[Device],
    out_csv: Path,
    interval_s: float,
    note: dict[str, Any],
    state: dict[str, bool],
    max_samples: int | None,
) -> None:
    parent = os.getppid()
    samples = errors = 0
    last_error = ""
    cpu: list[float] = []
    wall: list[float] = []
    start = time.monotonic()
    tick = 0
    final = False

    def sleep(seconds: float) -> None:
        if seconds <= 0 or state["stop"]:
            return
        state["sleeping"] = True
        try:
            time.sleep(seconds)
        except _Stop:
            pass
        finally:
            state["sleeping"] = False

    with out_csv.open("w", encoding="utf-8") as fh:
        fh.write(",".join(CSV_COLUMNS) + "\n")
        fh.flush()
        while True:
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                rows = [read_row(nvml, d) for d in devices]
            except nvml.error as exc:  # e.g. GPU lost: counted, not fatal
                errors += 1
                last_error = str(exc)[:200]
            else:
                fh.write("".join(",".join(_cell(v) for v in row) + "\n" for row in rows))
                fh.flush()
                samples += 1
                cpu.append((time.process_time() - c0) * 1000.0)
                wall.append((time.perf_counter() - w0) * 1000.0)
            if final or (max_samples is not None and samples + errors >= max_samples):
                break
            if os.getppid() != parent:  # the load generator is gone: do not outlive it
                break
            tick = max(tick + 1, int((time.monotonic() - start) / interval_s) + 1)
            sleep(start + tick * interval_s - time.monotonic())
            if state["stop"]:
                final = True  # one last sample, so the energy deltas cover the run's very end
    for entry, dev in zip(note.get("devices", []), devices, strict=False):
        entry["compute_processes_at_end"] = nvml.compute_processes(dev.handle)
    note.update(
        ended_at=time.time(),
        samples=samples,
        errors=errors,
        last_error=last_error,
        cost=sampling_cost(cpu, wall, digits=4),
    )


# -------------------------------------------------------------------------------------------- the Locust-side handle
def start_gpu_sampler(run_dir: Path | str, interval_s: float = 0.5) -> SamplerProcess:
    """Start the NVML sampler writing RUN_DIR/gpu_metrics.csv; returns at once and never raises.

    Where nvidia-ml-py is not installed (and no VLAB_NVML_MODULE is set) the note says so at once and no process is
    started; if the child cannot be started, the note says that. Either way a no-op handle is returned.
    """
    run_dir = Path(run_dir)
    note = run_dir / GPU_JSON
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return SamplerProcess(None, run_dir, None)
    if not os.environ.get(NVML_MODULE_ENV) and importlib.util.find_spec("pynvml") is None:
        with contextlib.suppress(OSError):
            write_note(note, {"available": False, "reason": "nvidia-ml-py (pynvml) is not installed"})
        return SamplerProcess(None, run_dir, None)
    args = ["--out", str(run_dir / GPU_CSV), "--interval", f"{interval_s:g}"]
    return spawn_sampler("vlab.telemetry.gpu", args, run_dir, run_dir / GPU_LOG, note)


# ------------------------------------------------------------------------------------------------------------ CLI
def show(nvml: Nvml | None = None) -> dict[str, Any]:
    """One reading of every visible GPU (for `python -m vlab.telemetry.gpu show`)."""
    try:
        nvml = nvml or Nvml.load()
        with opened(nvml):
            devices, how = open_devices(nvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
            return {
                "available": True,
                "driver": nvml.driver(),
                "visible": how,
                "devices": [describe(nvml, d) for d in devices],
                "rows": [dict(zip(CSV_COLUMNS, read_row(nvml, d), strict=True)) for d in devices],
            }
    except NvmlUnavailable as exc:
        return {"available": False, "reason": str(exc)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlab.telemetry.gpu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sample = sub.add_parser("sample", help="sample the GPUs into a CSV until SIGTERM")
    sample.add_argument("--out", type=Path, required=True, help="CSV path (the JSON note goes next to it)")
    sample.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    sample.add_argument("--max-samples", type=int, default=None, help="stop after this many (for measurements)")
    sub.add_parser("show", help="print one reading of every visible GPU as JSON")
    args = parser.parse_args(argv)
    if args.command == "sample":
        return sample_loop(args.out, max(args.interval, 0.05), max_samples=args.max_samples)
    print(json.dumps(show(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
