"""A stand-in for nvidia-ml-py's ``pynvml``, for tests on machines without an NVIDIA GPU.

Put this directory first on ``sys.path`` (or ``PYTHONPATH`` for a subprocess) and a plain
``import pynvml`` gets this module. It has the real module's function names, signatures,
constants, units (memory in bytes, power in mW, energy in mJ) and NVMLError hierarchy;
tests/test_gpu.py checks that against the installed nvidia-ml-py.

What the "driver" reports comes from a JSON scenario, the file named by ``FAKE_NVML_SCENARIO``,
read again at every nvmlInit (which also restarts the call counts). Without that variable the
fake behaves like a node without an NVIDIA driver. The scenario format is in docs/gpu.md.

Names starting with ``fake_`` are for tests only and do not exist in the real module.
"""

from __future__ import annotations

import json
import os
import string
from collections import Counter
from typing import Any

SCENARIO_ENV = "FAKE_NVML_SCENARIO"

# ----------------------------------------------------------------------------------------
# Constants, with the values of nvidia-ml-py (nvml.h).

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22
NVML_ERROR_INSUFFICIENT_RESOURCES = 23
NVML_ERROR_FREQ_NOT_SUPPORTED = 24
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_DEPRECATED = 26
NVML_ERROR_NOT_READY = 27
NVML_ERROR_GPU_NOT_FOUND = 28
NVML_ERROR_INVALID_STATE = 29
NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30
NVML_ERROR_UNKNOWN = 999

NVML_INIT_FLAG_NO_GPUS = 1 << 0
NVML_INIT_FLAG_NO_ATTACH = 1 << 1
NVML_INIT_FLAG_FORCE_INIT = 1 << 2

NVML_TEMPERATURE_GPU = 0
NVML_TEMPERATURE_GPU_MAX = 1
NVML_TEMPERATURE_COUNT = 2

NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_CLOCK_VIDEO = 3
NVML_CLOCK_COUNT = 4

NVML_CLOCK_ID_CURRENT = 0
NVML_CLOCK_ID_APP_CLOCK_TARGET = 1
NVML_CLOCK_ID_APP_CLOCK_DEFAULT = 2
NVML_CLOCK_ID_CUSTOMER_BOOST_MAX = 3
NVML_CLOCK_ID_COUNT = 4

nvmlClocksEventReasonGpuIdle = 0x001
nvmlClocksEventReasonApplicationsClocksSetting = 0x002
nvmlClocksEventReasonUserDefinedClocks = nvmlClocksEventReasonApplicationsClocksSetting
nvmlClocksEventReasonSwPowerCap = 0x004
nvmlClocksEventReasonHwSlowdown = 0x008
nvmlClocksEventReasonSyncBoost = 0x010
nvmlClocksEventReasonSwThermalSlowdown = 0x020
nvmlClocksEventReasonHwThermalSlowdown = 0x040
nvmlClocksEventReasonHwPowerBrakeSlowdown = 0x080
nvmlClocksEventReasonDisplayClockSetting = 0x100
nvmlClocksEventReasonNone = 0x000
nvmlClocksEventReasonAll = 0x1FF

nvmlClocksThrottleReasonGpuIdle = 0x001
nvmlClocksThrottleReasonApplicationsClocksSetting = 0x002
nvmlClocksThrottleReasonUserDefinedClocks = nvmlClocksThrottleReasonApplicationsClocksSetting
nvmlClocksThrottleReasonSwPowerCap = 0x004
nvmlClocksThrottleReasonHwSlowdown = 0x008
nvmlClocksThrottleReasonSyncBoost = 0x010
nvmlClocksThrottleReasonSwThermalSlowdown = 0x020
nvmlClocksThrottleReasonHwThermalSlowdown = 0x040
nvmlClocksThrottleReasonHwPowerBrakeSlowdown = 0x080
nvmlClocksThrottleReasonDisplayClockSetting = 0x100
nvmlClocksThrottleReasonBoardLimit = 0x200
nvmlClocksThrottleReasonReliability = 0x400
nvmlClocksThrottleReasonNone = 0x000
nvmlClocksThrottleReasonAll = 0x7FF

# A100-style MIG: up to 7 instances per GPU.
_MAX_MIG_DEVICES = 7
# What NVML puts in gpuInstanceId/computeInstanceId of a process on a GPU without MIG.
_NO_INSTANCE = 0xFFFFFFFF

# ----------------------------------------------------------------------------------------
# Errors: one NVMLError subclass per code, and NVMLError(code) builds that subclass.

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLLibraryMismatchError(Exception):
    pass


class NVMLError(Exception):
    _valClassMapping: dict[int, type[NVMLError]] = {}  # noqa: RUF012 - the real module's name

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        error = Exception.__new__(cls)
        error.value = value
        return error

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NVMLError) and self.value == other.value

    __hash__ = Exception.__hash__


def _error_class(constant: str, value: int) -> type[NVMLError]:
    # NVML_ERROR_GPU_IS_LOST -> NVMLError_GpuIsLost, as nvidia-ml-py names them.
    words = string.capwords(constant.removeprefix("NVML_ERROR_"), "_").replace("_", "")

    def new(cls: type, *args: Any) -> NVMLError:
        return NVMLError.__new__(cls, value)

    return type(f"NVMLError_{words}", (NVMLError,), {"__new__": new, "__module__": __name__})


for _constant, _value in list(globals().items()):
    if _constant.startswith("NVML_ERROR_"):
        _cls = _error_class(_constant, _value)
        globals()[_cls.__name__] = _cls
        NVMLError._valClassMapping[_value] = _cls


def nvmlExceptionClass(nvmlErrorCode: int) -> type[NVMLError]:
    if nvmlErrorCode not in NVMLError._valClassMapping:
        raise ValueError(f"nvmlErrorCode {nvmlErrorCode} is not valid")
    return NVMLError._valClassMapping[nvmlErrorCode]


def _error(name: str) -> NVMLError:
    """NVMLError_<name>() for a scenario's error name such as "NotSupported"."""
    cls = globals().get(f"NVMLError_{name}")
    if not (isinstance(cls, type) and issubclass(cls, NVMLError)):
        raise ValueError(f"fake NVML scenario: unknown NVML error {name!r}")
    return cls()


# ----------------------------------------------------------------------------------------
# Scenario state.


class _Handle:
    """An opaque device handle, like the real c_nvmlDevice_t pointer."""

    def __init__(self, entry: dict[str, Any], index: int, parent: _Handle | None = None):
        self.entry = entry
        self.index = index
        self.parent = parent

    @property
    def key(self) -> str:
        return self.entry.get("uuid", f"#{self.index}")


class _Struct:
    """Attribute access like the real module's ctypes structures and friendly objects."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__})"


_state: dict[str, Any] = {"init": 0, "scenario": {}, "calls": Counter()}


def _load_scenario() -> dict[str, Any]:
    path = os.environ.get(SCENARIO_ENV)
    if not path:
        return {"library": "not-found"}
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _require_init() -> dict[str, Any]:
    if _state["init"] <= 0:
        raise _error("Uninitialized")  # made by the loop above
    return _state["scenario"]


def _devices() -> list[dict[str, Any]]:
    return _require_init().get("devices", [])


def _text(value: str) -> str | bytes:
    return value.encode() if _state["scenario"].get("strings_as_bytes") else value


def _pick(value: Any, call: int) -> Any:
    """A scenario value for the n-th call: a constant, {"cycle": [a, b, …]} (item n mod length),
    or {"ramp": [start, step]} (start + n × step, for counters such as energy)."""
    if isinstance(value, dict) and "cycle" in value:
        items = value["cycle"]
        return items[call % len(items)]
    if isinstance(value, dict) and "ramp" in value:
        start, step = value["ramp"]
        return start + call * step
    return value


def _count(function: str, handle: _Handle | None) -> int:
    key = (function, None if handle is None else handle.key)
    call = _state["calls"][key]
    _state["calls"][key] += 1
    return call


def _check(function: str, handle: _Handle, call: int) -> None:
    """Raise the error the scenario sets for this function (or "*") on this device."""
    errors = handle.entry.get("errors", {})
    for spec in (errors.get(function), errors.get("*")):
        if spec is None:
            continue
        if isinstance(spec, str):
            raise _error(spec)
        if call >= spec.get("from_call", 0):
            raise _error(spec["error"])


def _call(function: str, handle: Any) -> int:
    """Count a device query and fail it as the scenario says; returns the call number."""
    _require_init()
    if not isinstance(handle, _Handle):
        raise _error("InvalidArgument")
    call = _count(function, handle)
    _check(function, handle, call)
    return call


def _get(handle: _Handle, key: str, call: int) -> Any:
    """A device's value for this call; a value the scenario leaves out is NotSupported."""
    if key not in handle.entry:
        raise _error("NotSupported")
    return _pick(handle.entry[key], call)


def _query(function: str, handle: Any, key: str) -> Any:
    return _get(handle, key, _call(function, handle))


def _pids(spec: int | str) -> list[int]:
    """A scenario pid: a number, "self" (this process) or "children" (each child of it)."""
    if spec == "self":
        return [os.getpid()]
    if spec == "children":
        return _children(os.getpid())
    return [int(spec)]


def _children(parent: int) -> list[int]:
    children = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as file:
                stat = file.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            children.append(int(name))
    return sorted(children)


def _processes(function: str, handle: Any, key: str) -> list[_Struct]:
    call = _call(function, handle)
    listed = _pick(handle.entry.get(key, []), call)  # none named: none running
    processes = []
    for proc in listed:
        for pid in _pids(proc["pid"]):
            processes.append(
                _Struct(
                    pid=pid,
                    usedGpuMemory=proc.get("used_memory"),
                    gpuInstanceId=proc.get("gpu_instance_id", _NO_INSTANCE),
                    computeInstanceId=proc.get("compute_instance_id", _NO_INSTANCE),
                )
            )
    return processes


# ----------------------------------------------------------------------------------------
# Fake-only helpers for tests.


def fake_calls(function: str, uuid: str | None = None) -> int:
    """How often ``function`` was called since the last nvmlInit (on one device, or on any)."""
    return sum(
        n for (name, key), n in _state["calls"].items()
        if name == function and (uuid is None or key == uuid)
    )  # fmt: skip


def fake_init_count() -> int:
    """nvmlInit calls not yet matched by nvmlShutdown."""
    return _state["init"]


# ----------------------------------------------------------------------------------------
# The NVML API.


def nvmlInitWithFlags(flags: int) -> None:
    scenario = _load_scenario()
    library = scenario.get("library", "ok")
    if library == "not-found":
        raise _error("LibraryNotFound")
    if library == "driver-not-loaded":
        raise _error("DriverNotLoaded")
    if scenario.get("init_error"):
        raise _error(scenario["init_error"])
    if not scenario.get("devices") and not flags & NVML_INIT_FLAG_NO_GPUS:
        raise _error("DriverNotLoaded")  # what NVML says on a node without GPUs
    _state.update(init=_state["init"] + 1, scenario=scenario, calls=Counter())
    _count("nvmlInit", None)


def nvmlInit() -> None:
    nvmlInitWithFlags(0)


def nvmlShutdown() -> None:
    _require_init()
    _count("nvmlShutdown", None)
    _state["init"] -= 1


def nvmlErrorString(result: int) -> str:
    return _MESSAGES.get(result, "Unknown Error")


def nvmlSystemGetDriverVersion() -> str | bytes:
    return _text(_require_init().get("driver_version", "550.54.15"))


def nvmlDeviceGetCount() -> int:
    devices = _devices()
    _count("nvmlDeviceGetCount", None)
    return len(devices)


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    devices = _devices()
    if not 0 <= index < len(devices):
        raise _error("InvalidArgument")
    handle = _Handle(devices[index], index)
    _call("nvmlDeviceGetHandleByIndex", handle)
    return handle


def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> _Handle:
    wanted = uuid.decode() if isinstance(uuid, bytes) else uuid
    for index, entry in enumerate(_devices()):
        gpu = _Handle(entry, index)
        if entry.get("uuid") == wanted:
            return gpu
        for mig in entry.get("mig", []):
            if mig.get("uuid") == wanted:
                return _Handle(mig, index, parent=gpu)
    raise _error("NotFound")


def nvmlDeviceGetUUID(handle: _Handle) -> str | bytes:
    return _text(_query("nvmlDeviceGetUUID", handle, "uuid"))


def nvmlDeviceGetName(handle: _Handle) -> str | bytes:
    return _text(_query("nvmlDeviceGetName", handle, "name"))


def nvmlDeviceGetIndex(handle: _Handle) -> int:
    _call("nvmlDeviceGetIndex", handle)
    if handle.parent is not None:
        raise _error("NotSupported")
    return handle.index


def nvmlDeviceGetUtilizationRates(handle: _Handle) -> _Struct:
    call = _call("nvmlDeviceGetUtilizationRates", handle)
    return _Struct(
        gpu=_get(handle, "utilization", call), memory=_get(handle, "memory_utilization", call)
    )


def nvmlDeviceGetMemoryInfo(handle: _Handle, version: int | None = None) -> _Struct:
    call = _call("nvmlDeviceGetMemoryInfo", handle)
    total, used = _get(handle, "memory_total", call), _get(handle, "memory_used", call)
    info = _Struct(total=total, used=used, free=total - used)
    if version:
        info.version, info.reserved = version, 0
    return info


def nvmlDeviceGetPowerUsage(handle: _Handle) -> int:
    return _query("nvmlDeviceGetPowerUsage", handle, "power_mw")


def nvmlDeviceGetTotalEnergyConsumption(handle: _Handle) -> int:
    return _query("nvmlDeviceGetTotalEnergyConsumption", handle, "energy_mj")


def nvmlDeviceGetTemperature(handle: _Handle, sensor: int) -> int:
    if sensor != NVML_TEMPERATURE_GPU:
        raise _error("InvalidArgument")
    return _query("nvmlDeviceGetTemperature", handle, "temperature_c")


_CLOCK_KEYS = {
    NVML_CLOCK_GRAPHICS: "graphics_clock_mhz",
    NVML_CLOCK_SM: "sm_clock_mhz",
    NVML_CLOCK_MEM: "mem_clock_mhz",
    NVML_CLOCK_VIDEO: "video_clock_mhz",
}


def nvmlDeviceGetClockInfo(handle: _Handle, type: int) -> int:
    if type not in _CLOCK_KEYS:
        raise _error("InvalidArgument")
    return _query("nvmlDeviceGetClockInfo", handle, _CLOCK_KEYS[type])


def nvmlDeviceGetClock(handle: _Handle, type: int, id: int) -> int:
    if type not in _CLOCK_KEYS or not 0 <= id < NVML_CLOCK_ID_COUNT:
        raise _error("InvalidArgument")
    return _query("nvmlDeviceGetClock", handle, _CLOCK_KEYS[type])


def nvmlDeviceGetCurrentClocksEventReasons(handle: _Handle) -> int:
    return _query("nvmlDeviceGetCurrentClocksEventReasons", handle, "clocks_event_reasons")


def nvmlDeviceGetCurrentClocksThrottleReasons(handle: _Handle) -> int:
    return _query("nvmlDeviceGetCurrentClocksThrottleReasons", handle, "clocks_event_reasons")


def nvmlDeviceGetComputeRunningProcesses_v2(handle: _Handle) -> list[_Struct]:
    return _processes("nvmlDeviceGetComputeRunningProcesses_v2", handle, "compute_processes")


def nvmlDeviceGetComputeRunningProcesses_v3(handle: _Handle) -> list[_Struct]:
    return _processes("nvmlDeviceGetComputeRunningProcesses_v3", handle, "compute_processes")


def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[_Struct]:
    return _processes("nvmlDeviceGetComputeRunningProcesses", handle, "compute_processes")


def nvmlDeviceGetGraphicsRunningProcesses_v2(handle: _Handle) -> list[_Struct]:
    return _processes("nvmlDeviceGetGraphicsRunningProcesses_v2", handle, "graphics_processes")


def nvmlDeviceGetGraphicsRunningProcesses_v3(handle: _Handle) -> list[_Struct]:
    return _processes("nvmlDeviceGetGraphicsRunningProcesses_v3", handle, "graphics_processes")


def nvmlDeviceGetGraphicsRunningProcesses(handle: _Handle) -> list[_Struct]:
    return _processes("nvmlDeviceGetGraphicsRunningProcesses", handle, "graphics_processes")


def nvmlDeviceIsMigDeviceHandle(device: _Handle) -> int:
    _call("nvmlDeviceIsMigDeviceHandle", device)
    return int(device.parent is not None)


def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(migDevice: _Handle) -> _Handle:
    _call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", migDevice)
    if migDevice.parent is None:
        raise _error("InvalidArgument")
    return migDevice.parent


def nvmlDeviceGetMaxMigDeviceCount(device: _Handle) -> int:
    _call("nvmlDeviceGetMaxMigDeviceCount", device)
    if "mig" not in device.entry:
        raise _error("NotSupported")
    return _MAX_MIG_DEVICES


def nvmlDeviceGetMigDeviceHandleByIndex(device: _Handle, index: int) -> _Handle:
    _call("nvmlDeviceGetMigDeviceHandleByIndex", device)
    instances = device.entry.get("mig", [])
    if not 0 <= index < _MAX_MIG_DEVICES:
        raise _error("InvalidArgument")
    if index >= len(instances):
        raise _error("NotFound")  # an empty slot
    return _Handle(instances[index], device.index, parent=device)


def nvmlDeviceGetGpuInstanceId(device: _Handle) -> int:
    return _query("nvmlDeviceGetGpuInstanceId", device, "gpu_instance_id")


def nvmlDeviceGetComputeInstanceId(device: _Handle) -> int:
    return _query("nvmlDeviceGetComputeInstanceId", device, "compute_instance_id")
