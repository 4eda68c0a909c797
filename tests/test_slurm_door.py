"""Slurm through one door: only watcher/slurm/ reads SLURM_* or runs Slurm's commands, and
how its runner behaves (timeouts, missing commands, failures, the configured paths)."""

from __future__ import annotations

import ast
import logging
import os
import time
from pathlib import Path

import pytest

from watcher.config import SlurmSettings, load_config
from watcher.sampling.sources import SlurmSource
from watcher.slurm.call import SlurmCommandError, run_command
from watcher.slurm.commands import SlurmCommands, parse_listpids
from watcher.slurm.env import SlurmTimes
from watcher.slurm.sacct import SacctError

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "watcher"
DOOR = PACKAGE / "slurm"
LISTPIDS = Path(__file__).parent / "fixtures/proc/listpids"

SLURM_COMMANDS = frozenset({"sacct", "squeue", "scontrol", "sbatch", "salloc", "scancel", "srun"})
# Calls that start a program: any subprocess function, and os's own spawners.
_OS_SPAWNERS = ("system", "popen", "exec", "spawn", "posix_spawn")


# -- the rule -------------------------------------------------------------------------------

def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the constants that are docstrings (module, class, function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _names_slurm_command(value: object) -> bool:
    """A string whose words include a Slurm command ("squeue", "/usr/bin/sacct -X")."""
    return isinstance(value, str) and any(
        os.path.basename(word) in SLURM_COMMANDS for word in value.split()
    )


def _spawns(call: ast.Call, from_subprocess: set[str]) -> bool:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in from_subprocess
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        module, name = func.value.id, func.attr
        return (
            module == "subprocess"
            or (module == "os" and name.startswith(_OS_SPAWNERS))
            or (module == "asyncio" and name.startswith("create_subprocess"))
        )
    return False


def offences(source: str, filename: str = "<test>") -> list[str]:
    """Where a module outside watcher/slurm/ goes round the door, as ``file:line: why``."""
    tree = ast.parse(source, filename)
    docstrings = _docstrings(tree)
    from_subprocess = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "subprocess"
        for alias in node.names
    }
    found = []
    run = set()  # constants already reported as run (ast.walk sees a call before its argv)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _spawns(node, from_subprocess):
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                for inner in ast.walk(arg):
                    if isinstance(inner, ast.Constant) and _names_slurm_command(inner.value):
                        found.append(f"{filename}:{inner.lineno}: runs {inner.value!r}")
                        run.add(id(inner))
        elif isinstance(node, ast.List | ast.Tuple) and node.elts:
            # An argv in the making: ["squeue", "-h", ...], run later under another name.
            first = node.elts[0]
            if (isinstance(first, ast.Constant) and _names_slurm_command(first.value)
                    and id(first) not in run):
                found.append(f"{filename}:{first.lineno}: an argv for {first.value!r}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str | bytes)
            and node.value[:6] in ("SLURM_", b"SLURM_")
            and id(node) not in docstrings
        ):
            found.append(f"{filename}:{node.lineno}: reads {node.value!r}")
    return sorted(set(found))


def test_the_rule_catches_each_way_round_the_door():
    assert offences('subprocess.run(["squeue", "-h"])') == ["<test>:1: runs 'squeue'"]
    assert offences('from subprocess import run as r\nr(["/usr/bin/sacct", "-X"])') == [
        "<test>:2: runs '/usr/bin/sacct'"
    ]
    assert offences('os.system("scancel 12")') == ["<test>:1: runs 'scancel 12'"]
    assert offences('argv = ("sbatch", "--wrap", "true")') == ["<test>:1: an argv for 'sbatch'"]
    assert offences('os.environ.get("SLURM_JOB_ID")') == ["<test>:1: reads 'SLURM_JOB_ID'"]
    assert offences('x = f"SLURM_{name}"') == ["<test>:1: reads 'SLURM_'"]
    assert offences('data.startswith(b"SLURM_")') == ["<test>:1: reads b'SLURM_'"]
    allowed = (
        '"""Reads SLURM_JOB_ID."""\n'
        'def f():\n    """SLURM_CPUS_ON_NODE, as Slurm sets it."""\n'
        'METHODS = ("cgroup-v2", "scontrol")\n'
        'subprocess.run(["ls", "--format=scontrol"])\n'
        'help = "Slurm job id (default: $SLURM_JOB_ID)."\n'
    )
    assert offences(allowed) == []


def test_only_watcher_slurm_reads_slurm_variables_or_runs_slurm():
    modules = [p for p in sorted(PACKAGE.rglob("*.py")) if DOOR not in p.parents]
    assert len(modules) > 30 and (PACKAGE / "sampling/slurm_steps.py") in modules
    found = [
        hit
        for path in modules
        for hit in offences(path.read_text(), str(path.relative_to(REPO)))
    ]
    assert found == [], "go through watcher/slurm/ instead:\n" + "\n".join(found)


# -- fake Slurm commands --------------------------------------------------------------------

def fake(tmp_path: Path, name: str, body: str) -> str:
    """An executable shell script standing in for a Slurm command; returns its path."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def commands(**settings) -> SlurmCommands:
    return SlurmCommands.from_config(SlurmSettings(**settings))


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")  # a zombie no one has reaped yet has stopped all the same


def test_a_command_past_its_timeout_is_killed_with_its_children(tmp_path):
    child = tmp_path / "child.pid"
    squeue = fake(tmp_path, "squeue", f"sleep 60 &\necho $! > {child}\nwait\n")
    started = time.monotonic()
    with pytest.raises(SlurmCommandError) as caught:
        commands(squeue=squeue, command_timeout_s=0.5).job_times(5, {})
    assert time.monotonic() - started < 10
    assert str(caught.value) == (
        "squeue timed out after 0.5 s; is slurmctld reachable? (the limit is "
        "slurm.command_timeout_s)"
    )
    assert caught.value.reason == "timeout"
    pid = int(child.read_text())
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), "the command's child outlived the timeout"


def test_sacct_has_its_own_timeout(tmp_path):
    sacct = fake(tmp_path, "sacct", "sleep 60\n")
    slurm = commands(sacct=sacct, sacct_timeout_s=0.5, command_timeout_s=3600)
    with pytest.raises(SacctError, match=r"^sacct timed out after 0\.5 s; is slurmdbd reachable\? "
                                         r"\(the limit is slurm\.sacct_timeout_s\)$"):
        slurm.run_sacct(["--allusers"])


def test_a_missing_command_says_what_to_install_or_set(tmp_path):
    with pytest.raises(SlurmCommandError) as caught:
        commands(squeue="/nonexistent/squeue").job_times(5, {})
    assert str(caught.value) == (
        "/nonexistent/squeue not found: install the Slurm client or set slurm.squeue"
    )
    assert caught.value.reason == "not-found"
    with pytest.raises(SlurmCommandError, match=r"set slurm\.sbatch$"):
        commands(sbatch=str(tmp_path / "sbatch")).submit(["--wrap", "true"])
    with pytest.raises(SlurmCommandError, match=r"^slurm\.scancel is empty"):
        commands(scancel="  ").cancel([1])


def test_a_failing_command_quotes_the_end_of_its_stderr(tmp_path):
    scontrol = fake(tmp_path, "scontrol", "for i in 1 2 3 4 5; do echo \"line $i\" >&2; done\n"
                                          "exit 3\n")
    with pytest.raises(SlurmCommandError) as caught:
        commands(scontrol=scontrol).cluster_name()
    assert str(caught.value) == "scontrol show config failed (exit 3): line 3 / line 4 / line 5"
    assert caught.value.reason == "failed"
    quiet = fake(tmp_path, "sacct", "exit 1\n")
    with pytest.raises(SacctError, match=r"^sacct failed \(exit 1\): \(no message\)$"):
        commands(sacct=quiet).run_sacct([])


def test_the_runner_needs_a_timeout(tmp_path):
    with pytest.raises(TypeError):
        run_command("true", [], setting="squeue")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="positive"):
        run_command("true", [], setting="squeue", timeout_s=0)


def test_sacct_gets_its_environment_and_a_command_line_setting_is_split(tmp_path):
    sacct = fake(tmp_path, "sacct", 'echo "$TZ $SLURM_TIME_FORMAT $SLURM_BITSTR_LEN $*"\n')
    assert commands(sacct=sacct).run_sacct(["-X", "a b"]) == "UTC standard 0 -X a b\n"
    wrapped = commands(sacct=f"/bin/sh {sacct} --wrapped")
    assert wrapped.run_sacct(["-X"]) == "UTC standard 0 --wrapped -X\n"


def test_job_times_from_the_environment_else_squeue(tmp_path):
    times = {"SLURM_JOB_START_TIME": "1000", "SLURM_JOB_END_TIME": "4600"}
    assert commands(squeue="/nonexistent/squeue").job_times(5, times) == SlurmTimes(3600, 1000.0)
    asked = tmp_path / "asked"
    squeue = fake(tmp_path, "squeue", f'echo "$*" > {asked}\necho "2:00:00|N/A"\n')
    assert commands(squeue=squeue).job_times(5, {}) == SlurmTimes(7200, None)
    assert asked.read_text() == "-h -j 5 -o %l|%S\n"
    silent = fake(tmp_path, "silent", "exit 0\n")
    assert commands(squeue=silent).job_times(5, {}) == SlurmTimes(None, None)


def test_the_cluster_name(tmp_path):
    scontrol = fake(tmp_path, "scontrol", 'echo "AuthType                = auth/munge"\n'
                                          'echo "ClusterName             = tc"\n')
    assert commands(scontrol=scontrol).cluster_name() == "tc"
    nameless = fake(tmp_path, "nameless", 'echo "AuthType = auth/munge"\n')
    with pytest.raises(SlurmCommandError, match=r"names no ClusterName; set slurm\.cluster$"):
        commands(scontrol=nameless).cluster_name()


def test_submit_and_cancel(tmp_path):
    asked = tmp_path / "asked"
    sbatch = fake(tmp_path, "sbatch", f'echo "$*" > {asked}\necho "4242;tc"\n')
    assert commands(sbatch=sbatch).submit(["--wrap", "sleep 1"]) == 4242
    assert asked.read_text() == "--parsable --wrap sleep 1\n"
    plain = fake(tmp_path, "plain", 'echo 17\n')
    assert commands(sbatch=plain).submit([]) == 17
    odd = fake(tmp_path, "odd", 'echo "Submitted batch job 17"\n')
    with pytest.raises(SlurmCommandError, match="sbatch printed no job id"):
        commands(sbatch=odd).submit([])

    cancelled = tmp_path / "cancelled"
    scancel = fake(tmp_path, "scancel", f'echo "$*" >> {cancelled}\n')
    commands(scancel=scancel).cancel([3, 4])
    commands(scancel=scancel).cancel([])  # nothing to cancel: no call
    assert cancelled.read_text() == "3 4\n"


def test_every_setting_reaches_the_commands():
    config = load_config(environ={
        "TURINGWATCH_SLURM_SQUEUE": "/opt/slurm/bin/squeue",
        "TURINGWATCH_SLURM_SCANCEL": "/opt/slurm/bin/scancel",
        "TURINGWATCH_SLURM_COMMAND_TIMEOUT_S": "7",
        "TURINGWATCH_SLURM_SACCT_TIMEOUT_S": "90",
    })
    slurm = SlurmCommands.from_config(config.slurm)
    assert (slurm.squeue, slurm.scancel, slurm.sacct) == (
        "/opt/slurm/bin/squeue", "/opt/slurm/bin/scancel", "sacct"
    )
    assert (slurm.timeout_s, slurm.sacct_timeout_s) == (7, 90)
    assert SlurmCommands.from_config() == SlurmCommands.from_config(SlurmSettings())
    assert (SlurmSettings().command_timeout_s, SlurmSettings().sacct_timeout_s) == (30, 600)


# -- the sampler gets the configured scontrol -----------------------------------------------

@pytest.fixture
def nowhere(tmp_path: Path) -> tuple[str, str]:
    """An empty /proc and cgroup root: no strategy but scontrol finds anything there."""
    (tmp_path / "proc").mkdir()
    (tmp_path / "cgroup").mkdir()
    return str(tmp_path / "proc"), str(tmp_path / "cgroup")


def test_the_configured_scontrol_reaches_the_sampler(tmp_path, nowhere):
    asked = tmp_path / "asked"
    recorded = LISTPIDS / "job14-alice.txt"
    scontrol = fake(tmp_path, "scontrol", f'echo "$*" >> {asked}\ncat {recorded}\n')
    config = load_config(environ={"TURINGWATCH_SLURM_SCONTROL": scontrol})
    source = SlurmSource(14, None, *nowhere, slurm=SlurmCommands.from_config(config.slurm))
    steps = source.steps()
    assert {step: found.pids for step, found in steps.items()} == parse_listpids(
        recorded.read_text(), 14
    )
    assert source.method == "scontrol"
    assert asked.read_text() == "listpids 14\n"


def test_a_failing_scontrol_never_stops_the_sampler(tmp_path, nowhere, caplog):
    slow = fake(tmp_path, "slow", "sleep 60\n")
    finder = SlurmSource(14, None, *nowhere, slurm=commands(scontrol=slow, command_timeout_s=0.3))
    with caplog.at_level(logging.DEBUG, logger="watcher.sampling.slurm_steps"):
        assert finder.steps() == {} and finder.steps() == {}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "scontrol listpids timed out after 0.3 s" in warnings[0].message

    # Not runnable: asked once, then never again (even once it could be run).
    asked = tmp_path / "asked"
    unrunnable = tmp_path / "scontrol"
    unrunnable.write_text(f'#!/bin/sh\necho "$*" >> {asked}\n')
    unrunnable.chmod(0o644)
    source = SlurmSource(14, None, *nowhere, slurm=commands(scontrol=str(unrunnable)))
    assert source.steps() == {}
    unrunnable.chmod(0o755)
    assert source.steps() == {} and not asked.exists()
