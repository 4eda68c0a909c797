"""`turingwatch run` end to end on this machine (no Slurm): the command, its status, the reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def turingwatch(tmp_path, *args, env=None, timeout=120, **kwargs):
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("TURINGWATCH_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args], env=full_env, cwd=tmp_path,
        capture_output=True, text=True, timeout=timeout, **kwargs,
    )


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_reports_a_busy_command(tmp_path):
    out = tmp_path / "out"
    code = BURN.format(s=1.5) + "x = bytearray(150 * 2**20)\nfor i in range(0, len(x), 4096): x[i] = 1\n" \
        + "time.sleep(0.6)\n"
    done = turingwatch(tmp_path, "run", "--interval", "0.5", "--output", str(out), "--",
                       sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    assert "turingwatch report card" in done.stderr and "local run" in done.stderr
    assert "report card" not in done.stdout   # the job's output stays the job's
    s = summary(out)
    for key in ("job_id", "exit_code", "elapsed_s", "cores_available", "cpu_user_s", "cpu_system_s",
                "cpu_efficiency", "peak_rss_bytes", "mem_requested_bytes", "gpus", "steps"):
        assert key in s
    assert s["job_id"] is None and s["exit_code"] == 0 and s["gpus"] == []
    assert 1.4 <= s["cpu_user_s"] + s["cpu_system_s"] <= 3.0
    assert 150 * 2**20 <= s["peak_rss_bytes"] <= 400 * 2**20
    assert 0 < s["cpu_efficiency"] <= 1 and s["cores_available"] == len(os.sched_getaffinity(0))
    (step,) = s["steps"]
    assert step["step"] == "local" and step["samples"] >= 3
    assert step["processes"][0]["comm"].startswith("python")
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Cores in use" in html
    assert "<script" not in html and "<link" not in html and 'src="http' not in html  # offline


def test_exit_status_and_signal_are_kept(tmp_path):
    assert turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", "a", "--", "sh", "-c", "exit 3").returncode == 3
    assert summary(tmp_path / "a")["exit_code"] == 3
    killed = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", "b", "--", "sh", "-c", "kill -TERM $$")
    assert killed.returncode == -signal.SIGTERM
    assert summary(tmp_path / "b")["exit_signal"] == signal.SIGTERM
    missing = turingwatch(tmp_path, "run", "-q", "-o", "c", "--", "/no/such/program")
    assert missing.returncode == 127 and "cannot start /no/such/program" in missing.stderr


def test_signals_reach_the_command(tmp_path):
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGUSR1, lambda *a: sys.exit(7))\n"
            "open('ready', 'w').close()\ntime.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "watcher", "run", "-q", "-i", "0.5", "-o", "o", "--",
                             sys.executable, "-c", code], cwd=tmp_path, env=env)
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=30) == 7


def test_daemonized_and_short_lived_children_are_counted(tmp_path):
    # A grandchild that double-forks away (re-parented to the watcher, a subreaper) and
    # twenty short workers that each live less than a sample interval.
    burner = f"{sys.executable} -c '{BURN.format(s=0.1)}'"
    script = (f"( setsid {sys.executable} -c '{BURN.format(s=0.8)}' & ); "
              f"for i in $(seq 20); do {burner}; done; sleep 1.5")
    done = turingwatch(tmp_path, "run", "-q", "-i", "5", "-o", "o", "--", "bash", "-c", script)
    assert done.returncode == 0, done.stderr
    cpu = summary(tmp_path / "o")["cpu_user_s"] + summary(tmp_path / "o")["cpu_system_s"]
    assert cpu >= 0.8 + 20 * 0.1 * 0.9


def test_watcher_trouble_never_stops_the_command(tmp_path):
    unwritable = turingwatch(tmp_path, "run", "-o", "/proc/forbidden", "--", "sh", "-c", "echo ran; exit 4")
    assert unwritable.returncode == 4 and "ran" in unwritable.stdout
    assert "the command runs unwatched" in unwritable.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[watcher\n")
    broken = turingwatch(tmp_path, "--config", str(bad), "run", "-q", "-o", "o", "--", "sh", "-c", "exit 5")
    assert broken.returncode == 5 and "using the defaults" in broken.stderr
    fast = turingwatch(tmp_path, "run", "-q", "-i", "0.01", "-o", "f", "--", "true")
    assert fast.returncode == 0 and "below 0.5" in fast.stderr


def test_no_nvml_library_is_one_line(tmp_path):
    done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", "o", "--", "true")
    assert done.returncode == 0
    assert len(done.stderr.splitlines()) == 1 and "NVML is not available" in done.stderr


def test_gpus_through_the_fake_nvml(tmp_path):
    scenario = REPO / "tests" / "fake_nvml" / "scenarios" / "two-gpus-one-idle.json"
    env = {"PYTHONPATH": f"{REPO / 'tests' / 'fake_nvml'}:{REPO}", "FAKE_NVML_SCENARIO": str(scenario)}
    done = turingwatch(tmp_path, "run", "-i", "0.5", "-o", "o", "--", sys.executable, "-c",
                       BURN.format(s=1.0), env=env)
    assert done.returncode == 0, done.stderr
    gpus = {g["index"]: g for g in summary(tmp_path / "o")["gpus"]}
    assert set(gpus) == {0, 1}
    assert gpus[1]["no_process_share"] == 1.0 and gpus[0]["no_process_share"] < 1.0
    assert gpus[0]["mean_power_w"] > 1 and gpus[0]["mean_util_pct"] > 0
    assert "no process of the job on it 100%" in done.stderr


@pytest.mark.parametrize("interval", ["0.5"])
def test_attach_needs_a_job(tmp_path, interval):
    done = turingwatch(tmp_path, "attach", "--interval", interval, env={"SLURM_JOB_ID": ""})
    assert done.returncode == 2 and "no job to attach to" in done.stderr


def test_cores_distribution_weights_time_and_rounds_partly_busy_cores_up():
    from watcher.card.summary import cores_distribution

    rows = [{"cores_in_use": 0.4, "dt": 10.0}, {"cores_in_use": 0.05, "dt": 10.0},
            {"cores_in_use": 2.0, "dt": 20.0}, {"cores_in_use": None, "dt": 5.0}]
    assert cores_distribution(rows) == [{"cores": 0, "share": 0.25}, {"cores": 1, "share": 0.25},
                                        {"cores": 2, "share": 0.5}]


def test_exec_from_a_shell_that_ran_other_work_first(tmp_path):
    # The shell's reaped children (the first burn) stay with the process across exec.
    script = (f"{sys.executable} -c '{BURN.format(s=1.0)}'; exec {sys.executable} -m watcher run -q "
              f"-i 0.5 -o o -- {sys.executable} -c '{BURN.format(s=0.3)}'")
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 0, done.stderr
    s = summary(tmp_path / "o")
    assert 0.25 <= s["cpu_user_s"] + s["cpu_system_s"] < 0.9


@pytest.mark.smtp
def test_run_mails_its_report_card(tmp_path):
    import email
    import email.policy
    import socket

    from aiosmtpd.controller import Controller

    class Keep:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append((envelope.rcpt_tos, envelope.content))
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    keep = Keep()
    controller = Controller(keep, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        env = {"TURINGWATCH_MAIL_SMTP_HOST": "127.0.0.1", "TURINGWATCH_MAIL_SMTP_PORT": str(port),
               "TURINGWATCH_MAIL_DOMAIN": "example.org", "TURINGWATCH_SITE_NAME": "Turing",
               "SLURM_JOB_USER": "alice"}
        done = turingwatch(tmp_path, "run", "-q", "--mail", "-i", "0.5", "-o", "o", "--", "sleep", "1.5", env=env)
    finally:
        controller.stop()
    assert done.returncode == 0, done.stderr
    ((rcpts, raw),) = keep.messages
    assert rcpts == ["alice@example.org"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Subject"] == "[Turing] report card for your run"
    assert "turingwatch report card" in message.get_body(("plain",)).get_content()
    assert "<svg" in message.get_body(("html",)).get_content()


def test_a_finding_without_advice_reads_as_a_sentence_of_its_two_leading_numbers():
    from watcher.card.findings import describe
    from watcher.card.text import render_card

    finding = describe({"rule": "cpu_underuse", "severity": "serious", "step": None,
                        "metrics": {"cpu_efficiency": 0.1, "cpu_s": 3010.0, "cores": 8,
                                    "job_key": "x", "source": "samples"}},
                       "CPU underuse", "Request as many cores as the program keeps busy. Or more.")
    card = render_card(_card_summary(findings=[finding]))
    assert "[serious] CPU underuse" in card
    assert "CPU underuse: CPU efficiency 10%, CPU time 50\u00a0min." in card
    assert "source" not in card and "cores 8" not in card      # no metric dump
    assert "→ Request as many cores as the program keeps busy." in card and "Or more" not in card


# -- where the card goes -------------------------------------------------------------------------
def test_the_card_goes_to_stderr_and_the_jobs_stdout_stays_its_data(tmp_path):
    done = turingwatch(tmp_path, "run", "-i", "0.5", "-o", "o", "--", "sh", "-c",
                       "echo a,b; echo 1,2; echo oops >&2; exit 3")
    assert done.returncode == 3
    assert done.stdout == "a,b\n1,2\n"                      # `> out.csv` gets exactly this
    assert done.stderr.index("oops") < done.stderr.index("turingwatch report card")
    assert "  ✖ FAILED, exit code 3\n" in done.stderr      # the end leads, plain when piped
    assert "\x1b[" not in done.stderr


@pytest.mark.parametrize("where", ["file", "-"])
def test_card_option_sends_the_card_to_a_file_or_to_stdout(tmp_path, where):
    target = "card.txt" if where == "file" else "-"
    done = turingwatch(tmp_path, "run", "-i", "0.5", "-o", "o", "--card", target, "--",
                       "echo", "data")
    assert done.returncode == 0, done.stderr
    card = (tmp_path / "card.txt").read_text() if where == "file" else done.stdout
    assert "turingwatch report card" in card and "COMPLETED" in card
    assert "report card" not in done.stderr
    if where == "file":
        assert done.stdout == "data\n"


def test_a_card_file_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path):
    done = turingwatch(tmp_path, "run", "-i", "0.5", "-o", "o", "--card", "no/such/dir/card.txt",
                       "--", "sh", "-c", "exit 4")
    assert done.returncode == 4
    assert "cannot write the card to no/such/dir/card.txt" in done.stderr


def test_a_bad_end_is_red_on_a_terminal_only_and_never_with_no_color(monkeypatch):
    from watcher.watch.runner import print_card

    class Terminal:
        encoding = "utf-8"

        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    card = "\n── card ──\n  ✖ FAILED, exit code 3\n  local run on n1\n"
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    tty = Terminal()
    print_card(card, stream=tty)
    assert "\x1b[1;31m  ✖ FAILED, exit code 3\x1b[0m" in tty.text and "\x1b[" not in tty.text.split("\n")[3]
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    print_card(card, stream=plain)
    assert plain.text == card


# -- the card's words ----------------------------------------------------------------------------
def _card_summary(**fields) -> dict:
    base = {
        "job_id": 7, "job_name": "gen", "command": "python gen.py\n--fast", "exit_code": 0,
        "exit_signal": None, "elapsed_s": 3600.0, "time_limit_s": None, "cores_available": 8,
        "cpu_user_s": 3000.0, "cpu_system_s": 10.0, "cpu_efficiency": 0.1,
        "cores_in_use": {"mean": 0.84, "distribution": []}, "peak_rss_bytes": 1 << 30,
        "mem_requested_bytes": None, "nodes": [{"node": "n1"}], "gpus": [], "steps": [],
        "top_processes": [], "intercepter": None, "start": "2026-12-03T12:13:07+00:00",
        "findings": [],
    }
    return {**base, **fields}


@pytest.mark.parametrize(("fields", "first"), [
    ({"exit_code": 3}, "✖ FAILED, exit code 3"),
    ({"exit_code": None, "exit_signal": 11}, "✖ Killed by SIGSEGV"),
    ({"exit_code": None, "exit_signal": 15, "time_limit_s": 3600}, "✖ TIMEOUT after 01:00:00"),
    ({"exit_code": 137, "mem_requested_bytes": 2**30, "mem_used_share": 0.99}, "✖ OUT_OF_MEMORY"),
    ({"exit_code": 137}, "✖ FAILED, exit code 137"),     # killed, but not at a limit
    ({}, "COMPLETED"),
])
def test_the_card_leads_with_how_the_job_ended(fields, first):
    from watcher.card.text import render_card

    lines = render_card(_card_summary(**fields)).splitlines()
    assert lines[2] == f"  {first}"
    assert lines[3] == "  job 7 (gen) on n1 · started 2026-12-03 12:13"
    assert lines[4] == "  Command      python gen.py --fast"


def test_the_state_is_in_summary_json(tmp_path):
    done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", "o", "--", "sh", "-c", "exit 5")
    assert done.returncode == 5
    s = summary(tmp_path / "o")
    assert s["state"] == "FAILED" and s["command"] == "sh -c exit 5" and s["job_name"] is None
    assert s["start"] <= s["end"] and s["start"][:4] == s["end"][:4] == time.strftime("%Y")


def test_an_advised_finding_reads_as_its_sentence_and_request():
    from watcher.card.findings import describe
    from watcher.card.text import render_card

    advice = {"sentence": "Kept 0.84 of 8 cores busy; 6.2 core-hours reserved and idle.",
              "request": "--cpus-per-task=1", "scope": "job", "basis": "p90 × 1.1"}
    finding = describe({"rule": "cpu_underuse", "severity": "serious", "step": None,
                        "metrics": {"cpu_efficiency": 0.1, "advice": advice}},
                       "CPU underuse", "Request as many cores as the program keeps busy.")
    card = render_card(_card_summary(findings=[finding]))
    assert "[serious] CPU underuse" in card
    assert "Kept 0.84 of 8 cores busy; 6.2 core-hours reserved and idle." in card
    assert "    Request: --cpus-per-task=1" in card and "→" not in card
    assert "(mean 0.84 cores busy)" in card      # the headline rounds as the finding does


@pytest.mark.parametrize(("fields", "state"), [
    ({"exit_code": None, "exit_signal": None}, None),                       # attach: not told
    ({"exit_code": None, "exit_signal": None, "time_limit_s": 60, "elapsed_s": 63.5}, "TIMEOUT"),
    ({"exit_code": 0, "time_limit_s": 60, "elapsed_s": 60.0}, "COMPLETED"),  # done just in time
    ({"exit_code": 143, "time_limit_s": 60, "elapsed_s": 60.2}, "TIMEOUT"),  # the shell's 128+15
    # Slurm's timer killed it 19 s late, and a 0:0 from sacct raced the real status in
    ({"exit_code": 0, "time_limit_s": 60, "elapsed_s": 79.0}, "TIMEOUT"),
    ({"exit_code": 3, "time_limit_s": 60, "elapsed_s": 79.0}, "FAILED"),   # its own failure
    ({"exit_code": None, "exit_signal": 9, "mem_used_share": 0.5}, "FAILED"),
])
def test_the_state_is_inferred_only_from_what_the_watcher_saw(fields, state):
    from watcher.card.ending import job_state

    assert job_state(_card_summary(**fields)) == state


def test_on_a_terminal_the_bad_end_is_red_and_the_rest_plain(tmp_path):
    import pty

    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    try:
        done = subprocess.run([sys.executable, "-m", "watcher", "run", "-i", "0.5", "-o", "o", "--",
                               "sh", "-c", "exit 2"], cwd=tmp_path, env=env, stderr=follower,
                              stdout=subprocess.DEVNULL, timeout=120)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    assert done.returncode == 2
    text = seen.decode()
    assert "\x1b[1;31m  ✖ FAILED, exit code 2\x1b[0m" in text and text.count("\x1b[") == 2
