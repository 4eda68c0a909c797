"""Configured files and values that are not what they should be: bytes that are not UTF-8, a
path that cannot be read, an interval that is not a number. `run` starts its job whatever is
wrong with its own configuration; every other command says what is wrong in one line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.config import Config, MailSettings, NotText, read_text_file
from watcher.mailer.addresses import AddressBook
from watcher.mailer.errors import MailError
from watcher.mailer.recipients import RecipientPolicy
from watcher.watch.runner import sampling_interval

REPO = Path(__file__).resolve().parent.parent
NOT_UTF8 = b'[site]\nname = "Caf\xe9"\n'   # Latin-1, as an editor on another system saves it


def turingwatch(tmp_path, *args, env=None, timeout=60):
    full = {**os.environ, "PYTHONPATH": str(REPO)}
    full.pop("TURINGWATCH_CONFIG", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "watcher", *args], env=full, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_config_that_is_not_utf8_is_one_line_naming_the_file_and_the_byte(tmp_path):
    bad = tmp_path / "site.toml"
    bad.write_bytes(NOT_UTF8)
    done = turingwatch(tmp_path, "--config", str(bad), "config", "show")
    assert done.returncode == 2
    assert one_line(done.stderr) == (f"turingwatch config: config file {bad} is not UTF-8 text: "
                                     "byte 0xe9 at offset 18 (line 2)")


def test_run_starts_its_job_whatever_its_config_file_holds(tmp_path):
    bad = tmp_path / "site.toml"
    bad.write_bytes(NOT_UTF8)
    done = turingwatch(tmp_path, "--config", str(bad), "run", "-q", "-i", "0.5", "-o", "o", "--",
                       "sh", "-c", "echo ran; exit 6")
    assert done.returncode == 6 and done.stdout == "ran\n"
    assert "using the defaults" in done.stderr and "Traceback" not in done.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["exit_code"] == 6


def test_run_starts_its_job_when_the_config_is_a_fifo_nobody_writes(tmp_path):
    # Opening it for reading used to wait for a writer forever: the job never started.
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", "o", "--", "sh", "-c", "exit 7",
                       env={"TURINGWATCH_CONFIG": str(fifo)}, timeout=60)
    assert done.returncode == 7, done.stderr


@pytest.mark.parametrize("where", ["directory", "device"])
def test_a_config_path_that_is_no_file_is_one_line(tmp_path, where):
    path = str(tmp_path) if where == "directory" else "/dev/zero"
    done = turingwatch(tmp_path, "config", "show", env={"TURINGWATCH_CONFIG": path})
    assert done.returncode == 2
    assert one_line(done.stderr).startswith(f"turingwatch config: config file {path} cannot be read:")
    ran = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", "o", "--", "sh", "-c", "exit 5",
                      env={"TURINGWATCH_CONFIG": path})
    assert ran.returncode == 5 and "using the defaults" in ran.stderr


def test_a_pipe_is_read_as_a_config():
    # `--config <(generate)`: a pipe with a writer is read to its end, not refused.
    read, write = os.pipe()
    try:
        os.write(write, b"[sampler]\ninterval_s = 3\n")
        os.close(write)
        assert read_text_file(Path(f"/dev/fd/{read}")) == "[sampler]\ninterval_s = 3\n"
    finally:
        os.close(read)


def test_a_rule_file_that_is_not_utf8_is_one_line(tmp_path):
    rules = tmp_path / "rules.toml"
    data = b"[rules.cpu_underuse]\ntitle = \"Unterausgel\xfcftet\"\n"
    rules.write_bytes(data)
    done = turingwatch(tmp_path, "rules", env={"TURINGWATCH_ANALYSIS_RULES_FILE": str(rules)})
    assert done.returncode != 0
    line = one_line(done.stderr)
    offset = data.index(b"\xfc")
    assert f"rule file {rules} is not UTF-8 text: byte 0xfc at offset {offset} (line 2)" in line


def test_address_map_and_opt_out_files_that_are_not_utf8_are_mail_errors(tmp_path):
    addresses, opt_out = tmp_path / "addresses", tmp_path / "opt-out"
    addresses.write_bytes(b"alice alice@example.org\nj\xf6rg joerg@example.org\n")
    opt_out.write_bytes(b"bob\nren\xe9e\n")
    with pytest.raises(MailError, match=rf"address map {addresses} is not UTF-8 text: byte 0xf6 at offset 25 \(line 2\)"):
        AddressBook(MailSettings(address_map_file=str(addresses)))
    with pytest.raises(MailError, match=rf"opt-out file {opt_out} is not UTF-8 text: byte 0xe9 at offset 7"):
        RecipientPolicy(MailSettings(opt_out_file=str(opt_out)))


def test_read_text_file_refuses_what_is_not_a_small_text_file(tmp_path):
    big = tmp_path / "huge.toml"
    big.write_bytes(b"#" * ((4 << 20) + 1))
    with pytest.raises(OSError, match="larger than 4 MiB"):
        read_text_file(big)
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(NotText, match=r"byte 0xff at offset 0 \(line 1\)"):
        read_text_file(tmp_path / "bin")


# -- intervals that are not numbers ----------------------------------------------------------
@pytest.mark.parametrize(("given", "expected"), [
    (None, 10.0), (2.0, 2.0), (math.nan, 10.0), (math.inf, 10.0), (-math.inf, 10.0),
    (0.01, 0.5), (1e9, 3600.0),
])
def test_the_sampling_interval_is_a_finite_number_within_bounds(given, expected, caplog):
    assert sampling_interval(given, Config().sampler.interval_s) == expected
    assert bool(caplog.records) == (given not in (None, 2.0))


@pytest.mark.parametrize("interval", ["nan", "inf"])
def test_run_with_an_interval_that_is_not_a_number_samples_at_the_default(tmp_path, interval):
    done = turingwatch(tmp_path, "run", "-q", "-i", interval, "-o", "o", "--", "sleep", "1.5")
    assert done.returncode == 0
    assert f"--interval {interval} is not a number of seconds; using 10 s" in done.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["watcher"]["cpu_s"] < 1.0      # nan made the sampling loop spin a core


@pytest.mark.parametrize(("options", "warning"), [
    (["-i", "5x"], "--interval 5x is not a number of seconds; using 10 s"),
    (["-o", "afile"], "not watching this job (afile: not a directory)"),
])
def test_run_starts_its_job_whatever_its_options_say(tmp_path, options, warning):
    (tmp_path / "afile").write_text("")
    done = turingwatch(tmp_path, "run", "-q", *options, "--", "sh", "-c", "echo ran; exit 4")
    assert done.returncode == 4 and done.stdout == "ran\n", done.stderr
    assert warning in done.stderr
