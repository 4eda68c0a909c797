"""GPU sampling through NVML, against the fake pynvml in tests/fake_nvml and the real binding."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.slurm_helpers import shell_line
from watcher.sampling.gpu import GpuSampler, throttle_reason_names, visible_devices_from_env

FAKE_DIR = Path(__file__).parent / "fake_nvml"
REPO = Path(__file__).parent.parent
GIB = 1 << 30


def _load_module(name: str, path: str | None) -> ModuleType:
    """A fresh copy of the module at ``path``, leaving sys.modules as it was."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    before = sys.modules.get(name)
    sys.modules[name] = module  # nvidia-ml-py looks itself up there while loading
    try:
        spec.loader.exec_module(module)
    finally:
        if before is None:
            del sys.modules[name]
        else:
            sys.modules[name] = before
    return module


@pytest.fixture(scope="module")
def fake_module() -> ModuleType:
    return _load_module("pynvml", str(FAKE_DIR / "pynvml.py"))


@pytest.fixture(scope="module")
def real_module() -> ModuleType:
    """The installed nvidia-ml-py, whatever sys.path says."""
    others = [p for p in sys.path if Path(p or ".").resolve() != FAKE_DIR.resolve()]
    spec = importlib.machinery.PathFinder.find_spec("pynvml", others)
    assert spec is not None, "nvidia-ml-py is not installed"
    return _load_module("pynvml", spec.origin)


def gpu(n: int, **overrides) -> dict:
    """A healthy GPU for a scenario: every metric present."""
    device = {
        "uuid": f"GPU-{n:08x}-1111-2222-3333-444455556666",
        "name": "NVIDIA A100-SXM4-40GB",
        "memory_total": 40 * GIB,
        "memory_used": 1 * GIB,
        "utilization": 50,
        "memory_utilization": 20,
        "power_mw": 200_000,
        "energy_mj": 5_000_000,
        "temperature_c": 60,
        "sm_clock_mhz": 1410,
        "clocks_event_reasons": 0,
    }
    device.update(overrides)
    return device


class Harness:
    """Writes a scenario for the fake, builds samplers on it, and closes them afterwards."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: ModuleType):
        self.tmp_path, self.monkeypatch, self.nvml = tmp_path, monkeypatch, module
        self.lines: list[str] = []
        self.samplers: list[GpuSampler] = []
        monkeypatch.setitem(sys.modules, "pynvml", module)

    def scenario(self, devices: list[dict] | None = None, **rest) -> Path:
        path = self.tmp_path / "scenario.json"
        path.write_text(json.dumps({"devices": devices or [], **rest}))
        self.monkeypatch.setenv("FAKE_NVML_SCENARIO", str(path))
        return path

    def sampler(self, visible: list[str] | None = None, **kwargs) -> GpuSampler:
        sampler = GpuSampler(visible, self.lines.append, **kwargs)
        self.samplers.append(sampler)
        return sampler

    def close(self) -> None:
        for sampler in self.samplers:
            sampler.close()


@pytest.fixture
def nvml(tmp_path, monkeypatch, fake_module):
    harness = Harness(tmp_path, monkeypatch, fake_module)
    yield harness
    harness.close()
    assert fake_module.fake_init_count() == 0, "a sampler left NVML initialised"


# --- which GPUs the job may use ----------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"SLURM_JOB_ID": "42"}, []),
        ({"CUDA_VISIBLE_DEVICES": "0,2"}, ["0", "2"]),
        ({"CUDA_VISIBLE_DEVICES": ""}, []),
        ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, []),
        ({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, ["1"]),
        ({"CUDA_VISIBLE_DEVICES": " GPU-ab12 , 0,0,"}, ["GPU-ab12", "0"]),
        ({"CUDA_VISIBLE_DEVICES": "MIG-0f1e2d3c-aaaa"}, ["MIG-0f1e2d3c-aaaa"]),
        ({"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_GPUS": "3"}, ["0"]),
        ({"SLURM_STEP_GPUS": "1", "SLURM_JOB_GPUS": "1,3", "SLURM_JOB_ID": "7"}, ["1"]),
        ({"SLURM_JOB_GPUS": "1,3", "SLURM_JOB_ID": "7"}, ["1", "3"]),
    ],
)
def test_visible_devices_from_env(env, expected):
    assert visible_devices_from_env(env) == expected


def test_all_gpus_when_nothing_restricts_the_job(nvml):
    nvml.scenario([gpu(0), gpu(1), gpu(2)])
    sampler = nvml.sampler(None)
    assert sampler.status == "ok"
    assert [d.index for d in sampler.devices] == [0, 1, 2]
    assert sampler.devices[0].uuid == gpu(0)["uuid"]
    assert sampler.devices[0].name == "NVIDIA A100-SXM4-40GB"
    assert nvml.lines == []


def test_indices_and_uuids_map_to_physical_gpus_in_the_order_named(nvml):
    nvml.scenario([gpu(0), gpu(1), gpu(2), gpu(3)])
    visible = ["2", gpu(0)["uuid"], "GPU-00000003", "2", gpu(2)["uuid"].upper()]
    sampler = nvml.sampler(visible)
    assert [(d.index, d.uuid) for d in sampler.devices] == [
        (2, gpu(2)["uuid"]),
        (0, gpu(0)["uuid"]),
        (3, gpu(3)["uuid"]),  # a unique UUID prefix, as CUDA accepts
    ]
    assert nvml.lines == []


def test_tokens_naming_no_gpu_are_logged_in_one_line(nvml):
    nvml.scenario([gpu(0), gpu(1)])
    sampler = nvml.sampler(["1", "7", "GPU-0000000", "banana"])
    assert [d.index for d in sampler.devices] == [1]
    assert sampler.status == "ok"
    assert len(nvml.lines) == 1
    for token in ("7", "GPU-0000000", "banana"):  # the prefix matches two GPUs
        assert f"{token}: no such GPU" in nvml.lines[0]


def test_nothing_matching_is_an_error_status(nvml):
    nvml.scenario([gpu(0)])
    sampler = nvml.sampler(["3"])
    assert sampler.status == "error: no GPU here matches 3"
    assert sampler.devices == [] and sampler.sample({1}) == []
    assert nvml.lines == ["GPU sampling off: 3: no such GPU on this node"]
    assert nvml.nvml.fake_init_count() == 0  # NVML was shut down again


def test_gpus_outside_the_jobs_cgroup_are_left_out(nvml):
    nvml.scenario([gpu(0, errors={"nvmlDeviceGetHandleByIndex": "NoPermission"}), gpu(1)])
    assert [d.index for d in nvml.sampler(None).devices] == [1]
    assert nvml.lines == []
    assert [d.index for d in nvml.sampler(["0", "1"]).devices] == [1]
    assert nvml.lines == ["GPU sampling: left out 0: Insufficient Permissions"]


def test_mig_instances_by_uuid_and_legacy_name(nvml):
    mig = [
        {"uuid": "MIG-aaaa", "name": "A100 MIG 3g.20gb", "gpu_instance_id": 1,
         "compute_instance_id": 0, "memory_total": 20 * GIB, "memory_used": GIB},
        {"uuid": "MIG-bbbb", "name": "A100 MIG 3g.20gb", "gpu_instance_id": 2,
         "compute_instance_id": 0, "memory_total": 20 * GIB, "memory_used": 2 * GIB,
         "compute_processes": [{"pid": 77}]},
    ]  # fmt: skip
    nvml.scenario([gpu(0), gpu(1, mig=mig)])
    sampler = nvml.sampler(["MIG-bbbb", f"MIG-{gpu(1)['uuid']}/1/0", f"MIG-{gpu(1)['uuid']}/5/0"])
    assert [(d.index, d.uuid) for d in sampler.devices] == [(1, "MIG-bbbb"), (1, "MIG-aaaa")]
    assert "/5/0: no such GPU" in nvml.lines[0]

    bbbb, aaaa = sampler.sample({77})
    # NVML reads memory and processes per MIG instance, but not utilization or power.
    assert (bbbb.mem_used_bytes, bbbb.mem_total_bytes) == (2 * GIB, 20 * GIB)
    assert (bbbb.job_pids, aaaa.job_pids) == ([77], [])
    assert bbbb.util_pct is None and bbbb.power_w is None
    assert bbbb.gpu_name == "A100 MIG 3g.20gb"


def test_empty_visible_list_leaves_nvml_alone(nvml):
    nvml.scenario([gpu(0)])
    sampler = nvml.sampler([])
    assert sampler.status == "no-devices"
    assert nvml.nvml.fake_init_count() == 0  # checked while the sampler is open
    assert sampler.sample({1}) == [] and nvml.lines == []


def test_node_without_gpus(nvml):
    nvml.scenario([])
    sampler = nvml.sampler(None)
    assert sampler.status == "no-devices"
    assert len(nvml.lines) == 1


def test_disabled_does_not_touch_nvml(nvml):
    nvml.scenario([gpu(0)])
    sampler = nvml.sampler(None, enabled=False)
    assert sampler.status == "disabled"
    assert nvml.nvml.fake_init_count() == 0  # checked while the sampler is open
    assert sampler.sample({1}) == []


# --- readings ----------------------------------------------------------------------------


def test_units_are_converted(nvml):
    energy = {"ramp": [123_456_789, 50_000]}
    nvml.scenario([gpu(0, power_mw={"cycle": [312_456, 95_000]}, energy_mj=energy)])
    sampler = nvml.sampler(None)
    first, second = sampler.sample(set())[0], sampler.sample(set())[0]
    assert first.power_w == pytest.approx(312.456)  # mW -> W (the old tool was 10x off)
    assert second.power_w == pytest.approx(95.0)
    assert first.energy_j == pytest.approx(123_456.789)  # mJ -> J
    assert second.energy_j - first.energy_j == pytest.approx(50.0)
    assert (first.mem_used_bytes, first.mem_total_bytes) == (GIB, 40 * GIB)
    assert (first.util_pct, first.mem_util_pct) == (50.0, 20.0)
    assert (first.temperature_c, first.sm_clock_mhz) == (60.0, 1410.0)
    assert first.throttle_reasons == 0


def test_idle_allocated_gpu_is_recorded(nvml):
    nvml.scenario([gpu(0, utilization=0), gpu(1, compute_processes=[{"pid": 10}])])
    readings = nvml.sampler(["0", "1"]).sample(set())
    assert [r.gpu_index for r in readings] == [0, 1]
    assert (readings[0].job_pids, readings[0].other_pids, readings[0].util_pct) == ([], 0, 0.0)


def test_job_and_other_processes(nvml):
    nvml.scenario([
        gpu(0, compute_processes=[{"pid": 300}, {"pid": 100}, {"pid": 200}],
            graphics_processes=[{"pid": 100}, {"pid": 400}]),
    ])  # fmt: skip
    (reading,) = nvml.sampler(None).sample([100, 300, 999])
    assert reading.job_pids == [100, 300]
    assert reading.other_pids == 2  # 200 and 400; 100 is listed twice but counted once


def test_a_refused_metric_is_none_and_not_asked_again(nvml):
    nvml.scenario([
        gpu(0, errors={"nvmlDeviceGetPowerUsage": "NotSupported"}),
        {k: v for k, v in gpu(1).items() if k != "energy_mj"},  # a pre-Volta GPU
    ])  # fmt: skip
    sampler = nvml.sampler(None)
    for _ in range(3):
        first, second = sampler.sample(set())
    assert first.power_w is None and first.energy_j == 5000.0
    assert second.energy_j is None and second.power_w == 200.0
    assert nvml.nvml.fake_calls("nvmlDeviceGetPowerUsage", gpu(0)["uuid"]) == 1
    assert nvml.nvml.fake_calls("nvmlDeviceGetTotalEnergyConsumption", gpu(1)["uuid"]) == 1
    assert nvml.lines == []  # "not supported" is normal, not news


def test_refused_process_lists_are_unknown_not_empty(nvml):
    refused = {f"nvmlDevice{kind}RunningProcesses{v}": "NoPermission"
               for kind in ("GetCompute", "GetGraphics") for v in ("", "_v2", "_v3")}
    nvml.scenario([gpu(0, errors=refused), gpu(1)])
    unknown, idle = nvml.sampler(None).sample({os.getpid()})
    assert (unknown.job_pids, unknown.other_pids) == (None, None)
    assert (idle.job_pids, idle.other_pids) == ([], 0)


def test_a_transient_error_is_none_logged_once_and_retried(nvml):
    nvml.scenario([gpu(0, errors={"nvmlDeviceGetTemperature": "NoPermission"})])
    sampler = nvml.sampler(None)
    readings = [sampler.sample(set())[0] for _ in range(3)]
    assert [r.temperature_c for r in readings] == [None, None, None]
    assert readings[-1].power_w == 200.0
    assert nvml.nvml.fake_calls("nvmlDeviceGetTemperature") == 3
    assert nvml.lines == ["GPU 0: cannot read temperature: Insufficient Permissions"]


def test_gpu_lost_mid_run(nvml):
    nvml.scenario([gpu(0, errors={"*": {"error": "GpuIsLost", "from_call": 2}}), gpu(1)])
    sampler = nvml.sampler(None)
    # memory was read once at start, so the lost GPU fails in the second round
    assert sampler.sample(set())[0].power_w == 200.0
    lost, healthy = sampler.sample(set())
    assert (lost.gpu_uuid, lost.mem_total_bytes) == (gpu(0)["uuid"], 40 * GIB)
    assert lost.util_pct is None and lost.power_w is None and lost.mem_used_bytes is None
    assert healthy.power_w == 200.0
    calls = nvml.nvml.fake_calls("nvmlDeviceGetUtilizationRates", gpu(0)["uuid"])
    assert len(sampler.sample(set())) == 2  # still one reading per GPU
    assert nvml.nvml.fake_calls("nvmlDeviceGetUtilizationRates", gpu(0)["uuid"]) == calls
    assert len(nvml.lines) == 1 and "is lost" in nvml.lines[0]


def test_a_nonsense_value_never_escapes_sample(nvml):
    nvml.scenario([gpu(0, utilization="n/a")])
    sampler = nvml.sampler(None)
    (reading,) = sampler.sample(set())
    assert reading.gpu_uuid == gpu(0)["uuid"] and reading.util_pct is None
    assert len(nvml.lines) == 1


def test_static_facts_are_read_once(nvml):
    nvml.scenario([gpu(0), gpu(1)])
    sampler = nvml.sampler(None)
    for _ in range(5):
        sampler.sample(set())
    for function in ("nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetHandleByIndex"):
        assert nvml.nvml.fake_calls(function) == 2, function
    assert nvml.nvml.fake_calls("nvmlDeviceGetMemoryInfo") == 2 + 2 * 5


def test_strings_from_old_bindings_are_decoded(nvml):
    nvml.scenario([gpu(0)], strings_as_bytes=True)
    sampler = nvml.sampler([gpu(0)["uuid"]])
    assert sampler.devices[0].uuid == gpu(0)["uuid"]
    assert sampler.sample(set())[0].gpu_name == "NVIDIA A100-SXM4-40GB"


# --- throttle reasons and older bindings/drivers -----------------------------------------


def test_throttle_reasons_mask(nvml):
    mask = 0x004 | 0x040  # SwPowerCap | HwThermalSlowdown
    nvml.scenario([gpu(0, clocks_event_reasons={"cycle": [mask, 0x001]})])
    sampler = nvml.sampler(None)
    assert sampler.sample(set())[0].throttle_reasons == mask
    assert sampler.sample(set())[0].throttle_reasons == 0x001
    assert throttle_reason_names(mask) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert throttle_reason_names(0) == []
    assert throttle_reason_names(0x1001) == ["gpu_idle", "0x1000"]


def test_throttle_reasons_from_a_driver_without_clocks_events(nvml):
    error = {"nvmlDeviceGetCurrentClocksEventReasons": "FunctionNotFound"}
    nvml.scenario([gpu(0, clocks_event_reasons=0x008, errors=error)])
    sampler = nvml.sampler(None)
    assert [sampler.sample(set())[0].throttle_reasons for _ in range(2)] == [0x008, 0x008]
    assert nvml.nvml.fake_calls("nvmlDeviceGetCurrentClocksEventReasons") == 1
    assert nvml.nvml.fake_calls("nvmlDeviceGetCurrentClocksThrottleReasons") == 2


def test_throttle_reasons_from_a_binding_without_clocks_events(nvml, monkeypatch):
    monkeypatch.delattr(nvml.nvml, "nvmlDeviceGetCurrentClocksEventReasons")
    nvml.scenario([gpu(0, clocks_event_reasons=0x020)])
    assert nvml.sampler(None).sample(set())[0].throttle_reasons == 0x020


def test_processes_from_a_driver_without_v3(nvml):
    errors = {
        "nvmlDeviceGetComputeRunningProcesses_v3": "FunctionNotFound",
        "nvmlDeviceGetGraphicsRunningProcesses_v3": "FunctionNotFound",
    }
    nvml.scenario([gpu(0, compute_processes=[{"pid": 5}], graphics_processes=[{"pid": 6}],
                       errors=errors)])  # fmt: skip
    (reading,) = nvml.sampler(None).sample({5})
    assert (reading.job_pids, reading.other_pids) == ([5], 1)
    assert nvml.nvml.fake_calls("nvmlDeviceGetComputeRunningProcesses_v2") == 1


# --- no NVML -----------------------------------------------------------------------------


@pytest.mark.parametrize("library", ["not-found", "driver-not-loaded"])
def test_no_library(nvml, library):
    nvml.scenario([gpu(0)], library=library)
    sampler = nvml.sampler(None)
    assert sampler.status == "no-library"
    assert sampler.sample({1}) == []
    sampler.close()
    assert len(nvml.lines) == 1 and nvml.lines[0].startswith("GPU sampling off: ")


def test_pynvml_not_installed(nvml, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    sampler = nvml.sampler(None)
    assert sampler.status == "no-library"
    assert len(nvml.lines) == 1 and "nvidia-ml-py" in nvml.lines[0]


def test_a_broken_scenario_is_an_error_status_not_an_exception(nvml, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_NVML_SCENARIO", str(tmp_path / "missing.json"))
    sampler = nvml.sampler(None)
    assert sampler.status.startswith("error: ") and "missing.json" in sampler.status
    assert len(nvml.lines) == 1


def test_init_refused(nvml):
    nvml.scenario([gpu(0)], init_error="NoPermission")
    sampler = nvml.sampler(None)
    assert sampler.status == "error: Insufficient Permissions"
    assert sampler.sample({1}) == [] and len(nvml.lines) == 1


def test_real_binding_without_driver(monkeypatch, real_module):
    """nvidia-ml-py on this GPU-less machine: nvmlInit finds no libnvidia-ml.so.1."""
    monkeypatch.setitem(sys.modules, "pynvml", real_module)
    lines: list[str] = []
    sampler = GpuSampler(None, lines.append)
    if sampler.status == "ok":  # pragma: no cover - a machine with a GPU
        sampler.close()
        pytest.skip("this machine has an NVIDIA driver")
    assert sampler.status == "no-library"
    assert sampler.sample({os.getpid()}) == []
    assert lines == ["GPU sampling off: NVML is not available here (NVML Shared Library Not Found)"]
    sampler.close()


def test_close_is_idempotent(nvml):
    nvml.scenario([gpu(0)])
    sampler = nvml.sampler(None)
    sampler.close()
    sampler.close()
    assert nvml.nvml.fake_calls("nvmlShutdown") == 1
    assert sampler.sample({1}) == []


# --- the fake itself ---------------------------------------------------------------------


def test_fake_matches_the_real_binding(fake_module, real_module):
    checked = 0
    for name, value in vars(fake_module).items():
        if name.startswith(("_", "fake_")) or name == "SCENARIO_ENV":
            continue
        is_function = inspect.isfunction(value) and value.__module__ == fake_module.__name__
        is_error = isinstance(value, type) and issubclass(value, Exception)
        if not (isinstance(value, int) or is_function or is_error):
            continue
        assert hasattr(real_module, name), f"{name} is not in nvidia-ml-py"
        real = getattr(real_module, name)
        if isinstance(value, int):
            assert value == real, name
        elif is_function:
            fake_params = list(inspect.signature(value).parameters)
            assert fake_params == list(inspect.signature(real).parameters), name
        checked += 1
    assert checked > 100
    for code in (3, 12, 15):
        fake_error, real_error = fake_module.NVMLError(code), real_module.NVMLError(code)
        assert type(fake_error).__name__ == type(real_error).__name__
        assert str(fake_error) == str(real_error)
    assert isinstance(fake_module.NVMLError_GpuIsLost(), fake_module.NVMLError)


def test_every_nvml_name_the_product_uses_is_in_both_modules(fake_module, real_module):
    sources = [REPO / "watcher/sampling/gpu.py", REPO / "watcher/sampling/gpu_devices.py"]
    nvml_name = re.compile(r"\b(nvml(?:Device|Init|Shutdown)\w*|NVML_[A-Z_]+)\b")
    used = {name for source in sources for name in nvml_name.findall(source.read_text())}
    assert "nvmlDeviceGetTotalEnergyConsumption" in used
    for name in sorted(used):
        assert hasattr(fake_module, name), f"the fake lacks {name}"
        assert hasattr(real_module, name), f"nvidia-ml-py lacks {name}"


def test_fake_drives_a_subprocess(tmp_path):
    """How the end-to-end tests use it: PYTHONPATH and a scenario file."""
    scenario = tmp_path / "two.json"
    scenario.write_text(json.dumps({"devices": [
        gpu(0, compute_processes=[{"pid": "self"}, {"pid": 4_000_000}]), gpu(1),
    ]}))  # fmt: skip
    code = (
        "import os, json\n"
        "from watcher.sampling.gpu import GpuSampler, visible_devices_from_env\n"
        "s = GpuSampler(visible_devices_from_env(os.environ))\n"
        "print(json.dumps([s.status] + [[r.gpu_index, r.power_w, r.job_pids == [os.getpid()],"
        " r.other_pids] for r in s.sample({os.getpid()})]))\n"
        "s.close()\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(FAKE_DIR), str(REPO)]),
        "FAKE_NVML_SCENARIO": str(scenario),
        "CUDA_VISIBLE_DEVICES": "1,0",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == ["ok", [1, 200.0, False, 0], [0, 200.0, True, 1]]


def test_shipped_scenario_sees_the_job_on_one_gpu_and_an_idle_one(nvml, monkeypatch):
    scenario = FAKE_DIR / "scenarios" / "two-gpus-one-idle.json"
    monkeypatch.setenv("FAKE_NVML_SCENARIO", str(scenario))
    sampler = nvml.sampler(None)
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        busy, idle = sampler.sample({job.pid})
    finally:
        job.kill()
        job.wait()
    assert busy.job_pids == [job.pid]  # "children": the processes this one started
    assert (busy.power_w, busy.util_pct) == (180.5, 35.0)
    assert (idle.job_pids, idle.other_pids, idle.util_pct) == ([], 0, 0.0)
    assert throttle_reason_names(idle.throttle_reasons) == ["gpu_idle"]


# --- under real Slurm ---------------------------------------------------------------------

_IN_JOB = """\
import json, os
from watcher.sampling.gpu import GpuSampler, visible_devices_from_env
visible = visible_devices_from_env(os.environ)
sampler = GpuSampler(visible, print)
print("RESULT", json.dumps([visible, sampler.status, [d.uuid for d in sampler.devices]]))
sampler.close()
"""


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("gres", "expected"),
    [
        (["--gres=gpu:1"], [["0"], "ok", [gpu(0)["uuid"]]]),  # the cluster's one (fake) GPU
        ([], [[], "no-devices", []]),  # Slurm sets no GPU variable at all for this job
    ],
)
def test_slurm_allocation_picks_the_jobs_gpus(slurm_cluster, gres, expected):
    job_dir = slurm_cluster.make_job_dir("gpu-")
    scenario = job_dir / "scenario.json"
    scenario.write_text(json.dumps({"devices": [gpu(0), gpu(1)]}))
    (job_dir / "probe.py").write_text(_IN_JOB)
    env = {"PYTHONPATH": f"{FAKE_DIR}:{REPO}", "FAKE_NVML_SCENARIO": str(scenario)}
    script = "#!/bin/sh\n" + shell_line([sys.executable, str(job_dir / "probe.py")], env) + "\n"
    job = slurm_cluster.run_job(script, *gres, cwd=job_dir)
    result = [line for line in job.output.splitlines() if line.startswith("RESULT ")]
    assert result, job.output
    assert json.loads(result[0].removeprefix("RESULT ")) == expected
