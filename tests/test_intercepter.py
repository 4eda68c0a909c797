"""The intercepter: its Python side (fast), and the C library built and run for real (native)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from watcher.cli import cli
from watcher.watch import intercept

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def stats_record(**overrides: int) -> dict:
    """One process's statistics, shaped as the C library writes them (all counters zero)."""
    record = {"version": 1, "pid": 1, "comm": "python3", "threshold_bytes": 131072}
    record.update({key: 0 for key in (*intercept.SUMMED, *intercept.PEAKS)})
    record["classes"] = []
    record.update(overrides)
    return record


@pytest.fixture
def fake_library(tmp_path, monkeypatch) -> Path:
    """A file standing in for the library, for tests of the environment plumbing only."""
    lib = tmp_path / "lib" / intercept.LIBRARY_NAME
    lib.parent.mkdir()
    lib.write_bytes(b"\x7fELF")
    monkeypatch.setenv(intercept.ENV_LIBRARY, str(lib))
    return lib


# ---- Python side ----


def test_library_path_prefers_the_explicit_variable(fake_library):
    assert intercept.library_path() == fake_library.resolve()


def test_library_path_names_a_missing_explicit_file(tmp_path, monkeypatch):
    monkeypatch.setenv(intercept.ENV_LIBRARY, str(tmp_path / "nope.so"))
    with pytest.raises(intercept.InterceptError, match=r"nope\.so: no such file"):
        intercept.library_path()


def test_preload_environment_puts_the_library_first_and_keeps_other_preloads(fake_library):
    env = {"PATH": "/usr/bin", "LD_PRELOAD": f"/opt/a.so {fake_library}:/opt/b.so"}
    out = intercept.preload_environment(env, Path("/tmp/job/malloc"))
    assert out["LD_PRELOAD"] == f"{fake_library.resolve()}:/opt/a.so:/opt/b.so"
    assert out[intercept.ENV_STATS] == "/tmp/job/malloc"
    assert out["PATH"] == "/usr/bin"
    assert env["LD_PRELOAD"].startswith("/opt/a.so")  # the input is not modified


def test_preload_environment_refuses_a_path_ld_preload_cannot_hold(tmp_path):
    with pytest.raises(intercept.InterceptError, match="colon or a space"):
        intercept.preload_environment({}, tmp_path / "s", library=Path("/my libs/x.so"))


def test_read_stats_tolerates_missing_partial_and_foreign_files(tmp_path):
    good = tmp_path / "s.1.json"
    good.write_text(json.dumps(stats_record(pool_hits=3)))
    assert intercept.read_stats(good)["pool_hits"] == 3
    partial = tmp_path / "s.2.json"
    partial.write_text(good.read_text()[:40])
    foreign = tmp_path / "s.3.json"
    foreign.write_text(json.dumps({"version": 7}))
    assert intercept.read_stats(partial) is None
    assert intercept.read_stats(foreign) is None
    assert intercept.read_stats(tmp_path / "missing.json") is None


def test_collect_stats_sums_counters_keeps_largest_peak_and_merges_classes(tmp_path):
    classes_a = [{"min_bytes": 1 << 26, "allocs": 10, "frees": 10, "hits": 9}]
    classes_b = [
        {"min_bytes": 1 << 23, "allocs": 4, "frees": 4, "hits": 3},
        {"min_bytes": 1 << 26, "allocs": 2, "frees": 2, "hits": 1},
    ]
    a = stats_record(pid=10, large_allocs=10, pool_hits=9, peak_pool_bytes=64 * MiB)
    a["classes"] = classes_a
    b = stats_record(pid=11, comm="sort", large_allocs=6, pool_hits=4, peak_pool_bytes=8 * MiB)
    b["classes"] = classes_b
    (tmp_path / "s.10.json").write_text(json.dumps(a))
    (tmp_path / "s.11.json").write_text(json.dumps(b))
    (tmp_path / "s.12.json").write_text("{")  # a process killed while writing
    (tmp_path / "other.13.json").write_text(json.dumps(stats_record(pool_hits=1000)))

    total = intercept.collect_stats(tmp_path / "s")
    assert (total["large_allocs"], total["pool_hits"]) == (16, 13)
    assert total["peak_pool_bytes"] == 64 * MiB
    assert (total["processes"], total["unreadable"]) == (2, 1)
    assert total["commands"] == ["python3", "sort"]
    assert total["classes"] == [
        {"min_bytes": 1 << 23, "allocs": 4, "frees": 4, "hits": 3},
        {"min_bytes": 1 << 26, "allocs": 12, "frees": 12, "hits": 10},
    ]
    assert intercept.collect_stats(tmp_path)["processes"] == 3  # a directory: every file


def test_format_summary_reads_like_a_report_card_line():
    stats = stats_record(
        large_allocs=200, pool_hits=199, pool_misses=1, bytes_recycled=199 * 64 * MiB,
        page_faults_avoided=199 * 16384, peak_pool_bytes=64 * MiB,
    )  # fmt: skip
    stats["processes"] = 3
    assert intercept.format_summary(stats) == (
        "recycled 12.4 GiB in 199 hits (1 miss) across 3 processes, ~3.3 M page faults avoided\n"
        "pool held at most 64.0 MiB of freed blocks"
    )
    quiet = stats_record(small_allocs=52_000)
    assert "nothing to recycle (52.0 k small allocations" in intercept.format_summary(quiet)
    assert "no process wrote" in intercept.format_summary({"processes": 0})


def test_cli_prints_the_path_and_summarises_stats(fake_library, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["intercepter", "--path"])
    assert result.exit_code == 0, result.output
    assert result.output == f"{fake_library.resolve()}\n"
    (tmp_path / "s.5.json").write_text(json.dumps(stats_record(large_allocs=2, pool_hits=1)))
    result = runner.invoke(cli, ["intercepter", "--stats", str(tmp_path / "s"), "--json"])
    assert json.loads(result.output)["pool_hits"] == 1


def test_cli_explains_a_missing_library(tmp_path, monkeypatch):
    monkeypatch.setenv(intercept.ENV_LIBRARY, str(tmp_path / "gone.so"))
    result = CliRunner().invoke(cli, ["intercepter", "--path"])
    assert result.exit_code == 1
    assert "gone.so: no such file" in result.output


# ---- the C library, built with meson and run for real ----


def _meson() -> str | None:
    beside_python = Path(sys.executable).parent / "meson"
    return str(beside_python) if beside_python.exists() else shutil.which("meson")


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory) -> Path:
    """A meson build of the project: $TURINGWATCH_INTERCEPT_BUILD if set, else a fresh one."""
    given = os.environ.get("TURINGWATCH_INTERCEPT_BUILD")
    if given:
        return Path(given)
    meson = _meson()
    if meson is None:
        pytest.skip("meson is not installed")
    build = tmp_path_factory.mktemp("meson") / "build"
    for args in (["setup", str(build), str(REPO)], ["compile", "-C", str(build)]):
        done = subprocess.run([meson, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    return build


@pytest.fixture
def library(build_dir) -> Path:
    return build_dir / "intercepter" / intercept.LIBRARY_NAME


def run_preloaded(cmd, library: Path, stats: Path, **env: str) -> subprocess.CompletedProcess:
    environ = intercept.preload_environment(os.environ, stats, library=library)
    environ.update(env)
    return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=300)


@pytest.mark.native
def test_meson_c_tests_pass(build_dir):
    meson = _meson() or "meson"
    done = subprocess.run(
        [meson, "test", "-C", str(build_dir), "--suite", "intercepter", "--print-errorlogs"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]


@pytest.mark.native
def test_stress_is_clean_under_sanitizers_and_valgrind(library, tmp_path):
    if shutil.which("valgrind") is None or shutil.which("cc") is None:
        pytest.skip("needs cc and valgrind")
    script = REPO / "intercepter" / "tests" / "check-sanitizers.sh"
    done = subprocess.run(
        ["bash", str(script), str(tmp_path), str(library), "16", "1000000"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.rstrip().endswith("== all clean")


@pytest.mark.native
def test_churn_is_recycled_and_reported_exactly(build_dir, library, tmp_path):
    churn = [str(build_dir / "intercepter" / "churn"), str(64 * MiB), "20"]
    plain = subprocess.run(churn, capture_output=True, text=True, check=True)
    done = run_preloaded(churn, library, tmp_path / "s")
    assert done.returncode == 0 and done.stdout == plain.stdout
    [file] = intercept.stats_files(tmp_path / "s")
    stats = intercept.read_stats(file)
    assert stats["comm"] == "churn" and file.name == f"s.{stats['pid']}.json"
    assert (stats["large_allocs"], stats["pool_hits"], stats["pool_misses"]) == (20, 19, 1)
    assert stats["page_faults_avoided"] == 19 * 64 * MiB // stats["page_bytes"]
    assert stats["peak_pool_bytes"] == 64 * MiB + stats["page_bytes"]  # class + spare page
    assert stats["classes"] == [{"min_bytes": 64 * MiB, "allocs": 20, "frees": 20, "hits": 19}]


@pytest.mark.native
def test_bad_options_warn_once_and_keep_the_defaults(build_dir, library, tmp_path):
    churn = [str(build_dir / "intercepter" / "churn"), str(MiB), "3"]
    done = run_preloaded(
        churn, library, tmp_path / "s",
        TURINGWATCH_INTERCEPT_THRESHOLD="lots", TURINGWATCH_INTERCEPT_POOL_BLCOKS="9",
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stderr.count("ignoring TURINGWATCH_INTERCEPT_THRESHOLD=lots: expected a size") == 1
    assert "unknown option TURINGWATCH_INTERCEPT_POOL_BLCOKS=9" in done.stderr
    stats = intercept.collect_stats(tmp_path / "s")
    assert stats["threshold_bytes"] == 128 << 10 and stats["pool_hits"] == 2


@pytest.mark.native
def test_pool_caps_and_idle_release(build_dir, library, tmp_path):
    churn = str(build_dir / "intercepter" / "churn")
    capped = run_preloaded(
        [churn, str(4 * MiB), "5"], library, tmp_path / "capped", TURINGWATCH_INTERCEPT_POOL_BYTES="1M"
    )
    assert capped.returncode == 0
    stats = intercept.collect_stats(tmp_path / "capped")
    assert (stats["pool_hits"], stats["maps"], stats["unmaps"]) == (0, 5, 5)
    idle = run_preloaded(
        [churn, str(MiB), "4", "30"], library, tmp_path / "idle", TURINGWATCH_INTERCEPT_IDLE_MS="5"
    )
    assert idle.returncode == 0
    stats = intercept.collect_stats(tmp_path / "idle")
    assert stats["idle_releases"] == 3 and stats["pool_hits"] == 0


NUMPY_WORKLOAD = textwrap.dedent(
    """
    import hashlib
    import numpy as np

    rng = np.random.default_rng(20261122)
    a = rng.random(2_000_000)
    digest = hashlib.sha256()
    for step in range(40):
        b = np.sqrt(a * (step + 1.5)) + np.sin(a)      # large temporaries, freed each step
        c = np.cumsum(b) / (1.0 + np.arange(b.size))
        m = np.outer(b[:700], c[:700]) @ np.ones(700)  # calloc/realloc-heavy paths too
        digest.update(c.tobytes())
        digest.update(m.tobytes())
        a = np.concatenate([a[1:], a[:1]])
    print(digest.hexdigest(), f"{float(c[-1]):.17g}")
    """
)


@pytest.mark.native
def test_numpy_workload_gives_identical_output(library, tmp_path):
    pytest.importorskip("numpy")
    script = tmp_path / "work.py"
    script.write_text(NUMPY_WORKLOAD)
    plain = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    done = run_preloaded([sys.executable, str(script)], library, tmp_path / "s")
    assert plain.returncode == 0 and done.returncode == 0, done.stderr
    assert done.stdout == plain.stdout
    stats = intercept.collect_stats(tmp_path / "s")
    assert stats["processes"] == 1 and stats["pool_hits"] > 100


SHELL_PIPELINE = (
    "seq 1 400000 | awk '{ print ($1 * 7919) % 100003, $1 }' | sort -k1,1n -k2,2nr "
    "| tr 0-9 a-j | uniq -c -w 3 | sort -s -k1,1nr | cut -c1-40 | sha256sum"
)


@pytest.mark.native
def test_shell_pipeline_gives_identical_output(library, tmp_path):
    plain = subprocess.run(["bash", "-c", SHELL_PIPELINE], capture_output=True, text=True)
    done = run_preloaded(["bash", "-c", SHELL_PIPELINE], library, tmp_path / "s")
    assert plain.returncode == 0 and done.returncode == 0, done.stderr
    assert done.stdout == plain.stdout
    stats = intercept.collect_stats(tmp_path / "s")
    assert stats["processes"] >= 5  # every program of the pipeline wrote its own file
    assert "sort" in stats["commands"] and stats["large_allocs"] > 0


CHURN_IN_PYTHON = """\
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
for _ in range(50):
    block = libc.malloc(32 << 20)
    libc.memset(block, 1, 32 << 20)
    libc.free(ctypes.c_void_p(block))
"""


@pytest.mark.native
def test_run_recycle_malloc_reports_the_savings(library, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TURINGWATCH_INTERCEPT_LIBRARY": str(library)}
    env.pop("SLURM_JOB_ID", None)
    done = subprocess.run(
        [sys.executable, "-m", "watcher", "run", "--recycle-malloc", "-i", "0.5", "-o", "out", "--",
         sys.executable, "-c", CHURN_IN_PYTHON],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Recycler" in done.stderr and "page faults avoided" in done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    saved = summary["intercepter"]
    assert saved["pool_hits"] >= 49 and saved["bytes_recycled"] >= 49 * (32 << 20)
    assert saved["processes"] == 1  # the job's python, not the watcher
