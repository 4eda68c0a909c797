"""Which GPUs a job may use, as NVML devices.

A job's GPUs are named by an environment variable, in one of several dialects: NVML indices
(``0,2``), GPU UUIDs or unique prefixes of them (``GPU-8a3e…``), MIG instances (``MIG-<uuid>``,
or the pre-R470 ``MIG-GPU-<uuid>/<gpu instance>/<compute instance>``), and Slurm's
``NoDevFiles`` for "none". Everything is resolved to NVML handles and UUIDs once, when the
sampler starts, so that later rounds never depend on index order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from watcher.slurm.env import granted_gpus, inside_job

_NO_DEVICES = ("", "NoDevFiles")


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One GPU (or MIG instance) the job may use."""

    index: int              # NVML index on the node; for a MIG instance, its physical GPU's
    uuid: str               # "GPU-…", or "MIG-…" for a MIG instance
    name: str | None
    handle: Any = field(repr=False, compare=False)


def visible_devices_from_env(env: Mapping[str, str]) -> list[str] | None:
    """The GPUs the job may use as written in its environment; None means every GPU on the node.

    Inside a Slurm job that names no GPU the answer is ``[]``: Slurm gave the job none.
    """
    # CUDA_VISIBLE_DEVICES comes first: it is what the job's CUDA uses, and under Slurm's
    # device cgroup (ConstrainDevices=yes) its indices are renumbered from 0 just as NVML
    # renumbers the GPUs it can see, while Slurm's own variables keep the node-wide numbers.
    if "CUDA_VISIBLE_DEVICES" in env:
        return parse_device_list(env["CUDA_VISIBLE_DEVICES"])
    granted = granted_gpus(env)
    if granted is not None:
        return parse_device_list(granted)
    if inside_job(env):
        return []
    return None


def parse_device_list(value: str) -> list[str]:
    """Split a CUDA_VISIBLE_DEVICES-style list; repeated entries are dropped.

    Like CUDA, a negative index ends the list (``-1`` hides every GPU).
    """
    if value.strip() in _NO_DEVICES:
        return []
    tokens: list[str] = []
    for raw in value.split(","):
        token = raw.strip()
        if not token:
            continue
        if token.lstrip("-").isdigit() and int(token) < 0:
            break
        if token not in tokens:
            tokens.append(token)
    return tokens


def resolve_devices(nvml: Any, visible: list[str] | None) -> tuple[list[GpuDevice], list[str]]:
    """Map the visible-device tokens to NVML devices.

    Returns the devices, in the order named and without repeats, and one message per token
    that names no GPU on this node. NVML errors while counting the GPUs propagate.
    """
    node_gpus, refused = _node_gpus(nvml)
    if visible is None:
        found = [(index, handle, uuid) for index, (handle, uuid) in node_gpus.items()]
        problems: list[str] = []
    else:
        found, problems = [], []
        for token in visible:
            try:
                hit = _resolve_token(nvml, token, node_gpus)
            except nvml.NVMLError as exc:
                hit, why = None, str(exc)
            else:
                why = refused.get(int(token)) if token.isdigit() else None
            if hit is None:
                problems.append(f"{token}: {why or 'no such GPU on this node'}")
            else:
                found.append(hit)

    devices: list[GpuDevice] = []
    seen: set[str] = set()
    for index, handle, uuid in found:
        if uuid not in seen:
            seen.add(uuid)
            devices.append(GpuDevice(index, uuid, _name(nvml, handle), handle))
    return devices, problems


def _node_gpus(nvml: Any) -> tuple[dict[int, tuple[Any, str]], dict[int, str]]:
    """Every GPU NVML lets us open, index -> (handle, uuid); and index -> why for the others.

    A GPU we may not open (NoPermission: it sits outside the job's device cgroup) belongs to
    someone else; it matters only when the job names it.
    """
    gpus, refused = {}, {}
    for index in range(nvml.nvmlDeviceGetCount()):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            gpus[index] = (handle, text(nvml.nvmlDeviceGetUUID(handle)))
        except nvml.NVMLError as exc:
            refused[index] = str(exc)
    return gpus, refused


def _resolve_token(
    nvml: Any, token: str, node_gpus: dict[int, tuple[Any, str]]
) -> tuple[int, Any, str] | None:
    if token.isdigit():
        index = int(token)
        if index in node_gpus:
            return (index, *node_gpus[index])
        return None
    if token.startswith("MIG-GPU-"):
        return _resolve_legacy_mig(nvml, token[len("MIG-") :], node_gpus)
    if token.startswith("MIG-"):
        mig = nvml.nvmlDeviceGetHandleByUUID(token)
        parent = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
        return nvml.nvmlDeviceGetIndex(parent), mig, text(nvml.nvmlDeviceGetUUID(mig))
    if token.startswith("GPU-"):
        index = _index_by_uuid(token, node_gpus)
        return None if index is None else (index, *node_gpus[index])
    return None


def _index_by_uuid(token: str, node_gpus: dict[int, tuple[Any, str]]) -> int | None:
    """The GPU whose UUID is ``token`` or starts with it (CUDA accepts unique prefixes)."""
    wanted = token.casefold()
    matches = [i for i, (_, uuid) in node_gpus.items() if uuid.casefold().startswith(wanted)]
    exact = [i for i in matches if node_gpus[i][1].casefold() == wanted]
    if exact:
        return exact[0]
    return matches[0] if len(matches) == 1 else None


def _resolve_legacy_mig(
    nvml: Any, spec: str, node_gpus: dict[int, tuple[Any, str]]
) -> tuple[int, Any, str] | None:
    """``GPU-<uuid>/<gi>/<ci>``: find the MIG instance by its GPU and instance ids."""
    parts = spec.split("/")
    if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    index = _index_by_uuid(parts[0], node_gpus)
    if index is None:
        return None
    parent = node_gpus[index][0]
    gpu_instance, compute_instance = int(parts[1]), int(parts[2])
    for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(parent)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, slot)
        except nvml.NVMLError:  # NotFound: an empty slot
            continue
        if (
            nvml.nvmlDeviceGetGpuInstanceId(mig) == gpu_instance
            and nvml.nvmlDeviceGetComputeInstanceId(mig) == compute_instance
        ):
            return index, mig, text(nvml.nvmlDeviceGetUUID(mig))
    return None


def _name(nvml: Any, handle: Any) -> str | None:
    try:
        return text(nvml.nvmlDeviceGetName(handle))
    except nvml.NVMLError:
        return None


def text(value: str | bytes) -> str:
    """NVML strings: str from nvidia-ml-py >= 11.515, bytes from older bindings."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
