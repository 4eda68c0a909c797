"""Spools as a broken writer or a hostile user hands them to `turingwatch ingest`.

Every user's jobs write into the shared spool directory, so anything can be there: a malformed
spool is refused whole and set aside with its reason while the others load; lines that are not
spool lines are counted; a name is never a glob; nobody can record samples as someone else or
replace another user's session; and what the ingest keeps is not readable by others.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from watcher import spool
from watcher.records import GpuReading, ProcessSample, SampleRecord, StepSample
from watcher.store import Store, StoreError, spool_loader
from watcher.store.spool_loader import apply_lines, load_spool

REPO = Path(__file__).resolve().parent.parent
ME = pwd.getpwuid(os.getuid()).pw_name
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")


def _others() -> list[pwd.struct_passwd]:
    """Two accounts other than root and the test's own, for the owners of files."""
    users = sorted((p for p in pwd.getpwall() if p.pw_uid not in (0, os.getuid())),
                   key=lambda p: (p.pw_name != "alice", p.pw_uid))
    return users[:2]


# -- spools ------------------------------------------------------------------------------------

def _record(seq: int) -> SampleRecord:
    step = StepSample("batch", 1, 2, 1.0 + seq, 0.5, 1 << 20, 1 << 20, 101, "solver", 0, 0, 0, 0, 5, 0,
                      4, "cpuset")
    proc = ProcessSample("batch", 101, 100, 555, "solver", 1.0 + seq, 0.5, 1 << 20, 0, 0, 0, 0, 5, 0, 2)
    gpu = GpuReading(0, "GPU-abc", "H100", 50.0, 10.0, 1 << 30, 80 << 30, 300.0, 1000.0 + seq,
                     60.0, 1980.0, 0, [101], 0)
    return SampleRecord(seq, 1_763_780_000.0 + 10 * seq, [step], [proc], [gpu],
                        [(101, 555, "solver --x")] if seq == 0 else [])


def write_spool(path: Path, *, sid: str = "s-1", user: str | None = ME, job_id: int | None = 42,
                samples: int = 3, end: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = spool.SpoolWriter(path)
    w.write_session({"session_id": sid, "job_id": job_id, "cluster": "lab", "node": "n1", "mode": "run",
                     "user_name": user, "command": "solver", "started_at": 1_763_780_000.0,
                     "interval_s": 10.0, "cores_available": 4, "mem_requested_bytes": None,
                     "time_limit_s": None, "gpu_status": "ok", "watcher_version": "test", "meta": {}})
    for seq in range(samples):
        w.write_sample(_record(seq))
    if end:
        w.write_end(1_763_780_100.0, {"exit_code": 0, "exit_signal": None})
    w.close()
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite(path: Path, objects: list) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects))
    return path


def counts(store: Store) -> tuple[int, int, int]:
    return store.one("SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM sample_rounds),"
                     " (SELECT count(*) FROM step_samples)")


def _set(obj: dict, dotted: str, value) -> dict:
    *parents, key = dotted.split(".")
    target = obj
    for name in parents:
        target = target[name] if not name.isdigit() else target[int(name)]
    if value is _DELETE:
        del target[key]
    elif key.isdigit():
        target[int(key)] = value
    else:
        target[key] = value
    return obj


_DELETE = object()
STEPS, PROCS = len(spool.FIELDS["steps"]), len(spool.FIELDS["procs"])

# (line index, what to change, the value, what the refusal says)
MALFORMED = {
    "no session_id": (0, "session.session_id", _DELETE, "line 1: a session line without a session_id"),
    "an empty session_id": (0, "session.session_id", "", "line 1: a session line without a session_id"),
    "a session that is text": (0, "session", "s-1", "line 1: a session line without its session"),
    "no node": (0, "session.node", _DELETE, "line 1: a session line without a node"),
    "a job_id in words": (0, "session.job_id", "forty-two", "job_id is not a whole number"),
    "a start in words": (0, "session.started_at", "yesterday", "without its start time"),
    "a short steps row": (1, "steps.0", [["batch", 1]], f"line 2: a steps row that is not a list of {STEPS}"),
    "a long procs row": (2, "procs.0", None, f"line 3: a procs row that is not a list of {PROCS}"),
    "a gpu row that is a number": (1, "gpus", [5], "a gpus row that is not a list of"),
    "a short cmd row": (1, "cmd", [[101, 555]], "line 2: a cmd row that is not a list of 3 values"),
    "a seq in words": (2, "seq", "x", "line 3: a sample line without a whole-number seq"),
    "a fractional seq": (2, "seq", 1.5, "line 3: a sample line without a whole-number seq"),
    "a negative seq": (2, "seq", -1, "a sample line without a whole-number seq"),
    "a sample without its time": (3, "ts", _DELETE, "line 4: a sample line without its time"),
    "steps that are text": (1, "steps", "lots", "steps, procs, gpus or cmd is not a list"),
    "an end that is text": (4, "end", "done", "line 5: an end line whose end is not an object"),
    "an end without its time": (4, "ts", None, "line 5: a end line without its time"),
    "a count in words": (1, "steps.0.1", "many", "refused the spool: Conversion Error"),
    "a missing required value": (1, "steps.0.5", None, "refused the spool: Constraint Error"),
}


def malformed(path: Path, case: str) -> Path:
    index, dotted, value, _message = MALFORMED[case]
    objects = lines(write_spool(path))
    if case == "a long procs row":
        objects[2]["procs"][0].append(7)
    else:
        _set(objects[index], dotted, value)
    return rewrite(path, objects)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_spool_is_refused_whole_with_the_reason(tmp_path, case):
    path = malformed(tmp_path / "bad.jsonl", case)
    with Store(":memory:") as store:
        with pytest.raises(StoreError, match=MALFORMED[case][3]) as refused:
            load_spool(store, path)
        assert type(refused.value) is spool_loader.SpoolRefused
        assert counts(store) == (0, 0, 0)


@pytest.mark.parametrize(("second", "message"), [
    ({"session_id": "s-2"}, "a spool holds the lines of one session, not of several: s-1, s-2"),
    ({"user_name": "mallory"}, "its session lines disagree on job, node or user"),
    ({"job_id": 43}, "its session lines disagree on job, node or user"),
])
def test_a_spool_with_two_different_session_lines_is_refused(tmp_path, second, message):
    path = write_spool(tmp_path / "two.jsonl")
    objects = lines(path)
    other = json.loads(json.dumps(objects[0]))
    other["session"].update(second)
    rewrite(path, [objects[0], objects[1], other, *objects[2:]])
    with Store(":memory:") as store, pytest.raises(spool_loader.SpoolRefused, match=message):
        load_spool(store, path)


def test_a_repeated_session_line_and_repeated_samples_are_stored_once(tmp_path):
    path = write_spool(tmp_path / "again.jsonl")
    objects = lines(path)
    rewrite(path, [objects[0], objects[0], objects[1], objects[1], objects[2], objects[1], *objects[2:]])
    with Store(":memory:") as store:
        loaded = load_spool(store, path)
        assert (loaded.samples, loaded.ended) == (3, True)
        assert counts(store) == (1, 3, 3)
        assert store.one("SELECT count(*), count(DISTINCT (seq, pid)) FROM process_samples") == (3, 3)


def test_lines_that_are_not_spool_lines_are_skipped_and_counted(tmp_path):
    path = write_spool(tmp_path / "noisy.jsonl")
    objects = lines(path)
    rewrite(path, [objects[0], "garbage{", objects[1], "[1, 2]", '"text"', "", '{"k": "note"}',
                   '{"no": "kind"}', objects[2], "\u00e9t\u00e9 \u2603", *objects[3:]])
    with path.open("ab") as f:
        f.write(b'\xff\xfe{"k": "sample", "seq": 9, "ts": 17')  # not UTF-8, and torn
    with Store(":memory:") as store:
        loaded = load_spool(store, path)
        assert (loaded.samples, loaded.skipped, loaded.ended) == (3, 7, True)
        assert counts(store) == (1, 3, 3)


@pytest.mark.parametrize(("name", "neighbour"), [
    ("job*.jsonl", "jobX.jsonl"),
    ("job[1].jsonl", "job1.jsonl"),
    ("job?.jsonl", "jobZ.jsonl"),
    ("**.jsonl", "other.jsonl"),
])
def test_a_spool_name_is_never_a_glob(tmp_path, name, neighbour):
    write_spool(tmp_path / name, sid="mine", samples=2)
    write_spool(tmp_path / neighbour, sid="theirs", samples=5)
    with Store(":memory:") as store:
        loaded = load_spool(store, tmp_path / name)
        assert (loaded.session_id, loaded.samples) == ("mine", 2)
        assert store.query("SELECT session_id FROM sessions") == [("mine",)]
        assert counts(store) == (1, 2, 2)


def test_two_spools_alike_in_size_and_time_are_each_read(tmp_path):
    # DuckDB reads each spool through its descriptor's /dev/fd/N, the same name every time:
    # nothing it might cache by name may give one spool the lines of another.
    a, b = write_spool(tmp_path / "a.jsonl", sid="s-a"), write_spool(tmp_path / "b.jsonl", sid="s-b")
    assert a.stat().st_size == b.stat().st_size
    os.utime(a, (1_000_000_000, 1_000_000_000))
    os.utime(b, (1_000_000_000, 1_000_000_000))
    with Store(":memory:") as store:
        assert [load_spool(store, p).session_id for p in (a, b, a)] == ["s-a", "s-b", "s-a"]
        assert store.query("SELECT session_id, count(*) FROM sample_rounds GROUP BY ALL ORDER BY 1") == [
            ("s-a", 3), ("s-b", 3)]


def test_a_link_a_fifo_or_a_directory_is_refused_at_once(tmp_path):
    target = write_spool(tmp_path / "real" / "n1.jsonl")
    (tmp_path / "link.jsonl").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.jsonl")
    (tmp_path / "dir.jsonl").mkdir()
    outcome: dict[str, str] = {}

    def load_all() -> None:  # a FIFO opened the ordinary way blocks until someone writes it
        with Store(":memory:") as store:
            for name in ("link.jsonl", "fifo.jsonl", "dir.jsonl"):
                try:
                    load_spool(store, tmp_path / name)
                    outcome[name] = "loaded"
                except StoreError as exc:
                    outcome[name] = str(exc)

    worker = threading.Thread(target=load_all, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "loading a FIFO hangs"
    assert outcome["link.jsonl"].endswith("link.jsonl: a symbolic link, not a spool file")
    assert outcome["fifo.jsonl"].endswith("fifo.jsonl: not a regular file")
    assert outcome["dir.jsonl"].endswith("dir.jsonl: not a regular file")


def test_apply_lines_refuses_malformed_lines_too(tmp_path):
    objects = lines(malformed(tmp_path / "bad.jsonl", "a short steps row"))
    with Store(":memory:") as store:
        with pytest.raises(spool_loader.SpoolRefused, match="the batch: line 2: a steps row"):
            apply_lines(store, objects)
        assert counts(store) == (0, 0, 0)


# -- the owner of the file -----------------------------------------------------------------------

def owner(name: str, uid: int = 5000, trusted: bool = False):
    return lambda _uid: spool_loader.SpoolOwner(uid, name, trusted)


def test_a_spool_claiming_another_users_session_is_refused(tmp_path):
    path = write_spool(tmp_path / "claim.jsonl", user="bob")
    with Store(":memory:") as store:
        with pytest.raises(spool_loader.SpoolRefused, match="says it is bob's, but its file belongs to alice"):
            load_spool(store, path, owner_of=owner("alice"))
        assert counts(store) == (0, 0, 0)
        loaded = load_spool(store, path, owner_of=owner("root", 0, trusted=True))  # root hands in any
        assert loaded.owner.name == "root"


def test_the_owner_of_a_spool_is_recorded_and_no_other_owner_replaces_its_session(tmp_path):
    mine = write_spool(tmp_path / "mine.jsonl", user="alice", samples=3)
    forged = write_spool(tmp_path / "forged.jsonl", user="bob", samples=1)   # the same session_id
    with Store(":memory:") as store:
        load_spool(store, mine, owner_of=owner("alice"))
        assert store.query("SELECT session_id, owner, trusted, spool FROM session_owners") == [
            ("s-1", "alice", False, "mine.jsonl")]
        before = store.query("SELECT * FROM step_samples ORDER BY seq")
        for who in (owner("bob"), owner("root", 0, trusted=True)):
            with pytest.raises(spool_loader.SpoolRefused, match="s-1 is stored from alice's spool"):
                load_spool(store, forged, owner_of=who)
        assert store.query("SELECT * FROM step_samples ORDER BY seq") == before
        assert store.one("SELECT user_name FROM sessions") == ("alice",)
        assert load_spool(store, mine, owner_of=owner("alice")).samples == 3   # its own: replaced


def test_a_session_stored_without_an_owner_is_replaced_by_its_users_spool_only(tmp_path):
    path = write_spool(tmp_path / "s.jsonl", user="alice")
    with Store(":memory:") as store:
        apply_lines(store, path.read_bytes().splitlines()[:2])
        forged = write_spool(tmp_path / "f.jsonl", user="bob")
        with pytest.raises(spool_loader.SpoolRefused, match="stored from alice's spool"):
            load_spool(store, forged, owner_of=owner("bob"))
        assert load_spool(store, path, owner_of=owner("alice")).samples == 3


def test_a_session_of_a_job_accounting_gives_another_user_is_refused(tmp_path):
    path = write_spool(tmp_path / "j.jsonl", user="alice", job_id=42)
    with Store(":memory:") as store:
        store.execute("INSERT INTO jobs (cluster, job_id, job_id_display, user_name, state)"
                      " VALUES ('lab', 42, '42', 'carol', 'COMPLETED')")
        for who in (owner("alice"), owner("root", 0, trusted=True)):
            with pytest.raises(spool_loader.SpoolRefused, match="job 42 is carol's in Slurm's accounting"):
                load_spool(store, path, owner_of=who)
        store.execute("UPDATE jobs SET user_name = 'alice'")
        assert load_spool(store, path, owner_of=owner("alice")).samples == 3


def test_the_trust_of_owners_root_the_service_user_and_the_rest():
    from watcher.errors import ConfigError
    from watcher.store.ingest import SpoolTrust

    other = _others()[0]
    assert SpoolTrust()(0).trusted and not SpoolTrust()(other.pw_uid).trusted
    assert SpoolTrust(other.pw_name)(other.pw_uid) == spool_loader.SpoolOwner(other.pw_uid, other.pw_name, True)
    free = max(p.pw_uid for p in pwd.getpwall()) + 1
    assert SpoolTrust()(free).name == str(free)
    with pytest.raises(ConfigError, match=r"store\.service_user: there is no user 'no-such-user'"):
        SpoolTrust("no-such-user")


def test_the_session_user_is_who_runs_the_watcher_not_what_the_environment_says(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "USER": "mallory", "LOGNAME": "mallory",
           "SLURM_JOB_USER": "mallory"}
    env.pop("TURINGWATCH_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "watcher", "run", "-q", "-i", "0.5", "-o", "out", "--", "true"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (path,) = spool.spool_files(tmp_path / "out")
    assert spool.read_header(path)["session"]["user_name"] == ME


def test_inside_a_job_the_watcher_is_checked_against_the_jobs_owner(monkeypatch, caplog):
    from watcher.slurm import env as jobenv

    owner_entry, stranger = _others()
    job = {"SLURM_JOB_ID": "42", "SLURM_JOB_UID": str(owner_entry.pw_uid), "SLURM_JOB_USER": "mallory"}
    monkeypatch.setattr(os, "getuid", lambda: stranger.pw_uid)
    assert jobenv.process_user(42, job) == stranger.pw_name       # itself, and says so
    assert f"job 42 belongs to uid {owner_entry.pw_uid}" in caplog.text
    monkeypatch.setattr(os, "getuid", lambda: owner_entry.pw_uid)
    assert jobenv.process_user(42, job) == owner_entry.pw_name
    monkeypatch.setattr(os, "getuid", lambda: 0)
    assert jobenv.process_user(42, job) == owner_entry.pw_name    # root watching a user's job
    assert jobenv.process_user(43, job) == "root"                 # not the job of this environment


# -- turingwatch ingest ----------------------------------------------------------------------------

def ingest(cwd: Path, *args: str, site: Path | None = None, store: Path, **env: str):
    full = {**os.environ, "PYTHONPATH": str(REPO), "TURINGWATCH_STORE_PATH": str(store), **env}
    full.pop("TURINGWATCH_CONFIG", None)
    if site is not None:
        full["TURINGWATCH_SAMPLER_SITE_SPOOL_DIR"] = str(site)
    return subprocess.run([sys.executable, "-m", "watcher", "ingest", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=120)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def test_ingest_sets_bad_spools_aside_and_loads_all_the_others(tmp_path):
    site = tmp_path / "site"
    write_spool(site / "a.jsonl", sid="a")
    malformed(site / "b.jsonl", "no session_id")
    malformed(site / "c.jsonl", "a short steps row")
    malformed(site / "d.jsonl", "a count in words")
    noisy = write_spool(site / "e.jsonl", sid="e")
    rewrite(noisy, [*lines(noisy)[:2], "garbage", "[1]", *lines(noisy)[2:]])
    write_spool(site / "f*.jsonl", sid="f")
    (site / "junk.jsonl").write_text("not a spool\n")
    write_spool(site / "g.jsonl", sid="g", end=False)              # a job still running

    done = ingest(tmp_path, site=site, store=tmp_path / "site.duckdb")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1] == "turingwatch ingest: 4 spool(s) could not be loaded"
    assert ("turingwatch: ingest: 3 spool(s) loaded, 1 still running, 4 set aside in quarantine/"
            " (each with its .reason), 2 line(s) skipped as garbage\n") in done.stderr
    assert names(site / "loaded") == ["a.jsonl", "e.jsonl", "f*.jsonl"]
    assert names(site) == ["g.jsonl", "loaded", "quarantine"]
    aside = site / "quarantine"
    assert names(aside) == sorted(f"{n}{x}" for n in ("b.jsonl", "c.jsonl", "d.jsonl", "junk.jsonl")
                                  for x in ("", ".reason"))
    assert "a session line without a session_id" in (aside / "b.jsonl.reason").read_text()
    assert "line 2: a steps row that is not a list of" in (aside / "c.jsonl.reason").read_text()
    assert "Conversion Error" in (aside / "d.jsonl.reason").read_text()
    assert "not a turingwatch spool (no session line)" in (aside / "junk.jsonl.reason").read_text()
    for name in ("b.jsonl", "c.jsonl", "d.jsonl", "junk.jsonl"):
        assert f"skipped {site / name}: " in done.stderr
    with duckdb.connect(str(tmp_path / "site.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT session_id FROM sessions ORDER BY 1").fetchall() == [
            ("a",), ("e",), ("f",), ("g",)]
    # Only the ingest's user reads what it keeps.
    for directory in (site / "loaded", aside):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert {stat.S_IMODE(p.lstat().st_mode) for p in directory.iterdir()} == {0o600}

    again = ingest(tmp_path, site=site, store=tmp_path / "site.duckdb")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "g.jsonl: job still running, 3 samples so far\n"


def test_a_site_spool_directory_called_spool_is_moved_to_loaded(tmp_path):
    site = tmp_path / "shared" / "spool"
    write_spool(site / "lab-42.n1.7.jsonl")
    done = ingest(tmp_path, site=site, store=tmp_path / "site.duckdb")
    assert done.returncode == 0, done.stderr
    assert names(site) == ["loaded"] and names(site / "loaded") == ["lab-42.n1.7.jsonl"]


def test_a_jobs_output_directory_and_named_files_stay_where_they_are(tmp_path):
    job = write_spool(tmp_path / "turingwatch-42" / "spool" / "n1.7.jsonl")
    named = write_spool(tmp_path / "elsewhere" / "x.jsonl", sid="x")
    bad = malformed(tmp_path / "elsewhere" / "bad.jsonl", "no node")
    done = ingest(tmp_path, str(tmp_path / "turingwatch-42"), str(named), str(bad), store=tmp_path / "s.duckdb")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == "turingwatch ingest: 1 spool(s) could not be loaded"
    assert f"skipped {bad}: " in done.stderr
    assert job.is_file() and named.is_file() and bad.is_file()
    assert names(tmp_path / "elsewhere") == ["bad.jsonl", "x.jsonl"]


def test_a_planted_loaded_directory_is_never_followed(tmp_path):
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_spool(site / "a.jsonl")
    (site / "loaded").symlink_to(elsewhere)
    done = ingest(tmp_path, site=site, store=tmp_path / "s.duckdb")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{site / 'loaded'} is not a directory of the ingest's own" in done.stderr
    assert names(elsewhere) == [] and (site / "a.jsonl").is_file()


def test_a_fifo_in_the_spool_directory_does_not_stop_the_ingest(tmp_path):
    site = tmp_path / "site"
    write_spool(site / "a.jsonl")
    os.mkfifo(site / "stuck.jsonl")
    try:
        done = ingest(tmp_path, site=site, store=tmp_path / "s.duckdb")
    except subprocess.TimeoutExpired:
        pytest.fail("the ingest hangs on a FIFO")
    assert done.returncode == 1
    assert names(site / "loaded") == ["a.jsonl"]
    assert "not a regular file" in (site / "quarantine" / "stuck.jsonl.reason").read_text()


@AS_ROOT
def test_ingest_judges_a_spool_by_the_owner_of_its_file(tmp_path):
    alice, bob = _others()
    site = tmp_path / "site"
    site.mkdir()
    site.chmod(0o1777)  # every user's jobs write here, none removes another's files
    files = {
        "alice.jsonl": (write_spool(site / "alice.jsonl", sid="s-a", user=alice.pw_name), alice),
        "claims.jsonl": (write_spool(site / "claims.jsonl", sid="s-c", user=bob.pw_name), alice),
        "reuse.jsonl": (write_spool(site / "reuse.jsonl", sid="s-a", user=bob.pw_name, samples=1), bob),
    }
    for path, who in files.values():
        os.chown(path, who.pw_uid, who.pw_gid)
    os.utime(site / "reuse.jsonl", (2_000_000_000, 2_000_000_000))

    done = ingest(tmp_path, site=site, store=tmp_path / "site.duckdb")
    assert done.returncode == 1, done.stderr
    assert names(site / "loaded") == ["alice.jsonl"]
    claims = (site / "quarantine" / "claims.jsonl.reason").read_text()
    assert f"says it is {bob.pw_name}'s, but its file belongs to {alice.pw_name}" in claims
    assert f"owner: {alice.pw_name} (uid {alice.pw_uid})" in claims
    reuse = (site / "quarantine" / "reuse.jsonl.reason").read_text()
    assert f"session s-a is stored from {alice.pw_name}'s spool" in reuse
    with duckdb.connect(str(tmp_path / "site.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT session_id, user_name FROM sessions").fetchall() == [("s-a", alice.pw_name)]
        assert conn.execute("SELECT count(*) FROM sample_rounds").fetchone() == (3,)
    assert {stat.S_IMODE(p.stat().st_mode) for p in (site / "loaded").iterdir()} == {0o600}

    # The service user, like root, hands in anyone's spools.
    os.rename(site / "quarantine" / "claims.jsonl", site / "claims.jsonl")
    trusted = ingest(tmp_path, site=site, store=tmp_path / "site.duckdb",
                     TURINGWATCH_STORE_SERVICE_USER=alice.pw_name)
    assert trusted.returncode == 0, trusted.stderr
    assert "claims.jsonl" in names(site / "loaded")


# -- the copies in the shared directory ------------------------------------------------------------

def test_spool_copies_in_the_shared_directory_are_readable_by_their_owner_only(tmp_path):
    from watcher.watch.sinks import DirectorySink

    spool_file = write_spool(tmp_path / "job" / "spool" / "n1.7.jsonl")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    old = os.umask(0o022)
    try:
        DirectorySink(shared).deliver([spool_file], label="lab-42")
        DirectorySink(shared).deliver([spool_file], label="../../escaped/lab-43")
    finally:
        os.umask(old)
    assert names(shared) == [".._.._escaped_lab-43.n1.7.jsonl", "lab-42.n1.7.jsonl"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in shared.iterdir()} == {0o600}

    # A set-group-ID directory: its group (the site's service group) reads the copies.
    grouped = tmp_path / "grouped"
    grouped.mkdir()
    grouped.chmod(0o3770)
    DirectorySink(grouped).deliver([spool_file], label="lab-42")
    assert stat.S_IMODE((grouped / "lab-42.n1.7.jsonl").stat().st_mode) == 0o640


@pytest.mark.slurm
@AS_ROOT
def test_a_real_jobs_spool_is_its_owners_whatever_its_environment_says(slurm_cluster, turingwatch_command,
                                                                       tmp_path):
    job_dir = slurm_cluster.make_job_dir("tw-owner-")
    site = job_dir / "site"
    site.mkdir()
    site.chmod(0o1777)
    watch = turingwatch_command.shell("run", "-q", "-i", "0.5", "-o", f"{job_dir}/out", "--", "sleep", "2")
    script = (f"#!/bin/sh\ncd {job_dir}\nexport USER=mallory LOGNAME=mallory SLURM_JOB_USER=mallory"
              f" TURINGWATCH_SAMPLER_SITE_SPOOL_DIR={site}\n{watch}\n")
    job = slurm_cluster.run_job(script, "-J", "tw-owner", cwd=job_dir, as_user=True)
    assert job.job["State"] == "COMPLETED", job.output[-3000:]

    user = pwd.getpwnam(slurm_cluster.user)
    (copy,) = site.glob("*.jsonl")
    assert (copy.stat().st_uid, stat.S_IMODE(copy.stat().st_mode)) == (user.pw_uid, 0o600)
    assert spool.read_header(copy)["session"]["user_name"] == slurm_cluster.user

    done = ingest(tmp_path, site=site, store=tmp_path / "site.duckdb")
    assert done.returncode == 0, done.stderr
    with duckdb.connect(str(tmp_path / "site.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT s.job_id, s.user_name, o.owner FROM sessions s"
                            " JOIN session_owners o USING (session_id)").fetchall() == [
            (job.job_id, slurm_cluster.user, slurm_cluster.user)]
