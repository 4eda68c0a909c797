"""GPU readings through NVML (the ``pynvml`` module of nvidia-ml-py).

One :class:`GpuSampler` per watcher session. It opens NVML once, maps the GPUs the job may use
(:mod:`watcher.sampling.gpu_devices`), caches what never changes (handles, UUIDs, names, memory
size), and then reads each GPU once per sample round.

Every GPU the job may use gets a reading each round, with or without a process on it: an
allocated GPU that nobody uses is the most wasted one. Whatever NVML will not say becomes None
in that reading; nothing raises out of :meth:`GpuSampler.sample`. Without NVML at all the
sampler logs one line and reports no GPUs.

Units: NVML gives power in milliwatts and energy in millijoules; readings are in W and J.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from watcher.records import GpuReading
from watcher.sampling.gpu_devices import GpuDevice, resolve_devices, visible_devices_from_env

__all__ = [
    "GpuDevice",
    "GpuSampler",
    "throttle_reason_names",
    "visible_devices_from_env",
]

# NVML return codes (nvml.h), compared by value so that any binding version will do.
_NOT_SUPPORTED = 3
_DRIVER_NOT_LOADED = 9
_LIBRARY_NOT_FOUND = 12
_FUNCTION_NOT_FOUND = 13
_GPU_IS_LOST = 15
# Errors that will not go away during a job: the metric is not asked for again on that GPU.
_PERMANENT = {_NOT_SUPPORTED, _FUNCTION_NOT_FOUND}

# nvmlClocksEventReason* bits (formerly nvmlClocksThrottleReason*), lowest bit first.
THROTTLE_REASONS = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}


def throttle_reason_names(mask: int) -> list[str]:
    """The names of the bits set in an NVML clocks-event mask; unknown bits as hex."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    if unknown:
        names.append(hex(unknown))
    return names


logger = logging.getLogger(__name__)


def _log_warning(line: str) -> None:
    logger.warning("%s", line)


class _GpuLost(Exception):
    """NVML says the GPU fell off the bus: nothing more can be read from it."""


class _Versioned:
    """An NVML query under several names, newest first; the first that the driver has wins.

    A binding newer than the driver raises FunctionNotFound for the newest name; the next
    name is tried and the dead one is never called again.
    """

    def __init__(self, nvml: Any, *names: str) -> None:
        self._functions = [getattr(nvml, name) for name in names if hasattr(nvml, name)]
        self._nvml_error = nvml.NVMLError

    def __call__(self, *args: Any) -> Any:
        while self._functions:
            try:
                return self._functions[0](*args)
            except self._nvml_error as exc:
                if getattr(exc, "value", None) != _FUNCTION_NOT_FOUND:
                    raise
                self._functions.pop(0)
        raise self._nvml_error(_FUNCTION_NOT_FOUND)


class _Gpu:
    """A mapped GPU and what the sampler has learnt about it."""

    __slots__ = ("device", "lost", "memory_total", "unsupported")

    def __init__(self, device: GpuDevice, memory_total: int | None) -> None:
        self.device = device
        self.memory_total = memory_total
        self.unsupported: set[str] = set()  # metrics NVML cannot give for this GPU
        self.lost = False

    def blank_reading(self) -> GpuReading:
        """What is known of this GPU without asking NVML: its identity and memory size."""
        d = self.device
        return GpuReading(
            gpu_index=d.index,
            gpu_uuid=d.uuid,
            gpu_name=d.name,
            util_pct=None,
            mem_util_pct=None,
            mem_used_bytes=None,
            mem_total_bytes=self.memory_total,
            power_w=None,
            energy_j=None,
            temperature_c=None,
            sm_clock_mhz=None,
            throttle_reasons=None,
            job_pids=None,
            other_pids=None,
        )


class GpuSampler:
    """Reads the GPUs a job may use, once per sample round.

    ``visible`` is :func:`visible_devices_from_env` of the job's environment (None: every GPU
    on the node). ``enabled=False`` (config ``watcher.gpu``) leaves NVML alone.

    ``status`` is ``ok``, ``no-library`` (no pynvml or no NVIDIA driver), ``no-devices`` (the
    job may use no GPU), ``disabled``, or ``error: <why>``. ``devices`` lists the mapped GPUs.
    """

    def __init__(
        self,
        visible: list[str] | None,
        log: Callable[[str], None] = _log_warning,
        *,
        enabled: bool = True,
    ) -> None:
        self.status = "disabled"
        self.devices: list[GpuDevice] = []
        self._log = log
        self._nvml: Any = None
        self._gpus: list[_Gpu] = []
        self._warned: set[tuple[str, str, int | None]] = set()
        if not enabled:
            return
        if visible == []:
            self.status = "no-devices"
            return
        try:
            import pynvml
        except ImportError as exc:
            self._give_up("no-library", f"cannot import pynvml ({exc}); install nvidia-ml-py")
            return
        if not self._init(pynvml):
            return
        try:
            self._map(pynvml, visible)
        except Exception as exc:  # pynvml.NVMLError, or anything a broken binding throws
            self._give_up(f"error: {exc}", f"cannot list the GPUs: {exc}")

    def _init(self, nvml: Any) -> bool:
        try:
            if hasattr(nvml, "nvmlInitWithFlags"):
                # NO_GPUS: a node without GPUs is "no devices", not an init failure.
                nvml.nvmlInitWithFlags(getattr(nvml, "NVML_INIT_FLAG_NO_GPUS", 0))
            else:
                nvml.nvmlInit()
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) in (_LIBRARY_NOT_FOUND, _DRIVER_NOT_LOADED):
                self._give_up("no-library", f"NVML is not available here ({exc})")
            else:
                self._give_up(f"error: {exc}", f"NVML would not start: {exc}")
            return False
        except Exception as exc:  # e.g. a binding that does not fit this driver
            self._give_up(f"error: {exc}", f"NVML would not start: {type(exc).__name__}: {exc}")
            return False
        self._nvml = nvml
        return True

    def _map(self, nvml: Any, visible: list[str] | None) -> None:
        devices, problems = resolve_devices(nvml, visible)
        if not devices:
            if visible is None:
                self._give_up("no-devices", "no GPU on this node")
            else:
                named = ",".join(visible)
                self._give_up(f"error: no GPU here matches {named}", "; ".join(problems))
            return
        if problems:
            self._log(f"GPU sampling: left out {'; '.join(problems)}")

        self._utilization = nvml.nvmlDeviceGetUtilizationRates
        self._memory = nvml.nvmlDeviceGetMemoryInfo
        self._power = nvml.nvmlDeviceGetPowerUsage
        self._energy = nvml.nvmlDeviceGetTotalEnergyConsumption
        self._temperature = nvml.nvmlDeviceGetTemperature
        self._clock = nvml.nvmlDeviceGetClockInfo
        self._sensor_gpu = nvml.NVML_TEMPERATURE_GPU
        self._clock_sm = nvml.NVML_CLOCK_SM
        self._throttle = _Versioned(
            nvml,
            "nvmlDeviceGetCurrentClocksEventReasons",
            "nvmlDeviceGetCurrentClocksThrottleReasons",
        )
        self._compute = _Versioned(
            nvml,
            "nvmlDeviceGetComputeRunningProcesses_v3",
            "nvmlDeviceGetComputeRunningProcesses_v2",
            "nvmlDeviceGetComputeRunningProcesses",
        )
        self._graphics = _Versioned(
            nvml,
            "nvmlDeviceGetGraphicsRunningProcesses_v3",
            "nvmlDeviceGetGraphicsRunningProcesses_v2",
            "nvmlDeviceGetGraphicsRunningProcesses",
        )
        for device in devices:
            gpu = _Gpu(device, None)
            try:
                memory = self._read(gpu, "memory", self._memory, device.handle)
            except _GpuLost:
                memory, gpu.lost = None, True
                self._log(f"GPU {device.index} ({device.uuid}) is lost; no readings")
            gpu.memory_total = None if memory is None else int(memory.total)
            self._gpus.append(gpu)
        self.devices = devices
        self.status = "ok"

    def _give_up(self, status: str, why: str) -> None:
        self.status = status
        self._log(f"GPU sampling off: {why}")
        self.close()

    def sample(self, job_pids: Collection[int]) -> list[GpuReading]:
        """One reading per mapped GPU; [] when GPU sampling is off. Never raises."""
        if self._nvml is None:
            return []
        job = job_pids if isinstance(job_pids, set | frozenset) else set(job_pids)
        readings = []
        for gpu in self._gpus:
            if gpu.lost:
                readings.append(gpu.blank_reading())
                continue
            try:
                readings.append(self._read_gpu(gpu, job))
            except _GpuLost:
                gpu.lost = True
                self._log(f"GPU {gpu.device.index} ({gpu.device.uuid}) is lost; no more readings")
                readings.append(gpu.blank_reading())
            except Exception as exc:  # a value NVML should never give; keep the job's watcher alive
                self._warn_once(gpu, "reading", None, f"{type(exc).__name__}: {exc}")
                readings.append(gpu.blank_reading())
        return readings

    def _read_gpu(self, gpu: _Gpu, job: Collection[int]) -> GpuReading:
        handle = gpu.device.handle
        read = self._read
        utilization = read(gpu, "utilization", self._utilization, handle)
        memory = read(gpu, "memory", self._memory, handle)
        power_mw = read(gpu, "power", self._power, handle)
        energy_mj = read(gpu, "energy", self._energy, handle)
        temperature = read(gpu, "temperature", self._temperature, handle, self._sensor_gpu)
        sm_clock = read(gpu, "sm_clock", self._clock, handle, self._clock_sm)
        throttle = read(gpu, "throttle", self._throttle, handle)
        compute = read(gpu, "compute_processes", self._compute, handle)
        graphics = read(gpu, "graphics_processes", self._graphics, handle)

        # A process that does both compute and graphics is listed twice. When NVML lists
        # neither, who runs on the GPU is unknown (None), which is not "nobody" ([]).
        pids = {p.pid for p in compute or ()} | {p.pid for p in graphics or ()}
        known = compute is not None or graphics is not None
        mine = sorted(pid for pid in pids if pid in job) if known else None
        d = gpu.device
        return GpuReading(
            gpu_index=d.index,
            gpu_uuid=d.uuid,
            gpu_name=d.name,
            util_pct=None if utilization is None else float(utilization.gpu),
            mem_util_pct=None if utilization is None else float(utilization.memory),
            mem_used_bytes=None if memory is None else int(memory.used),
            mem_total_bytes=gpu.memory_total if memory is None else int(memory.total),
            power_w=None if power_mw is None else power_mw / 1000,
            energy_j=None if energy_mj is None else energy_mj / 1000,
            temperature_c=None if temperature is None else float(temperature),
            sm_clock_mhz=None if sm_clock is None else float(sm_clock),
            throttle_reasons=throttle,
            job_pids=mine,
            other_pids=len(pids) - len(mine) if mine is not None else None,
        )

    def _read(self, gpu: _Gpu, metric: str, query: Callable[..., Any], *args: Any) -> Any:
        """One NVML query, or None when NVML refuses it (raises _GpuLost for a lost GPU)."""
        if metric in gpu.unsupported:
            return None
        try:
            return query(*args)
        except self._nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code == _GPU_IS_LOST:
                raise _GpuLost from None
            if code in _PERMANENT:
                gpu.unsupported.add(metric)
            else:  # NoPermission, Timeout, Unknown…: maybe better next round
                self._warn_once(gpu, metric, code, str(exc))
        except Exception as exc:  # a binding that does not match the driver, a ctypes error
            gpu.unsupported.add(metric)
            self._warn_once(gpu, metric, None, f"{type(exc).__name__}: {exc}")
        return None

    def _warn_once(self, gpu: _Gpu, metric: str, code: int | None, why: str) -> None:
        key = (gpu.device.uuid, metric, code)
        if key not in self._warned:
            self._warned.add(key)
            self._log(f"GPU {gpu.device.index}: cannot read {metric}: {why}")

    def close(self) -> None:
        """Shut NVML down; later calls do nothing and sample() returns []."""
        nvml, self._nvml = self._nvml, None
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except Exception as exc:  # already shut down elsewhere, or the driver went away
                self._log(f"GPU sampling: NVML shutdown failed: {exc}")
