"""Ingesting spools into the site's store: each one loaded, or set aside with the reason.

``turingwatch ingest`` reads the spools that finished jobs leave in ``sampler.site_spool_dir``,
a directory every user's jobs write into, and the spools named on its command line. Each spool
is loaded in a transaction of its own (:func:`~watcher.store.spool_loader.load_spool`), with the
owner of its file, as the file system says, deciding whose sessions it may hold
(:class:`SpoolTrust`). What happens to a spool then depends on where it was found:

- in a spool directory (the site's, or a directory named on the command line): once loaded and
  ended it moves to ``loaded/``; refused, it moves to ``quarantine/`` with ``<name>.reason``
  beside it; a running job's spool is loaded and left for the next ingest;
- named one by one, or in a job's output directory (``<dir>/spool/``): it stays where it is.

A spool at fault never stops the others; a fault of the store (busy, full) stops the ingest,
and sets nothing aside. ``loaded/`` and ``quarantine/`` belong to the ingest: made 0700, and
refused when they are anything else (a link, another user's directory, one others may write),
so that nobody can redirect or read what it moves; what it moves is made 0600, through the
descriptor it was read from, never through a name someone could have replaced.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from watcher.errors import ConfigError, StoreError
from watcher.files import atomic_write
from watcher.store import Store
from watcher.store.spool_loader import LoadedSession, SpoolFile, SpoolOwner, SpoolRefused, load_spool

LOADED = "loaded"
QUARANTINE = "quarantine"
log = logging.getLogger(__name__)


class SpoolTrust:
    """Who the owner of a spool file is to this site: root and ``store.service_user`` are
    trusted with any user's sessions, every other user with their own only."""

    def __init__(self, service_user: str = "") -> None:
        self.trusted_uids = {0}
        if service_user:
            try:
                self.trusted_uids.add(pwd.getpwnam(service_user).pw_uid)
            except KeyError:
                raise ConfigError(f"store.service_user: there is no user {service_user!r}") from None

    def __call__(self, uid: int) -> SpoolOwner:
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:  # a uid without a name (a deleted account): itself, never anyone else
            name = str(uid)
        return SpoolOwner(uid, name, uid in self.trusted_uids)


@dataclass(frozen=True)
class Found:
    """A spool to ingest, and whether the ingest may move it (it lies in a spool directory)."""

    path: Path
    movable: bool


@dataclass(frozen=True)
class Refused:
    path: Path
    reason: str
    set_aside: Path | None      # where it went; None: left where it was


@dataclass
class IngestReport:
    # (the spool, what it stored): ended and stored, or stored so far and left in place
    loaded: list[tuple[Path, LoadedSession]] = field(default_factory=list)
    running: list[tuple[Path, LoadedSession]] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    vanished: int = 0                                              # gone before they were read

    @property
    def skipped_lines(self) -> int:
        """Lines of the spools stored that were not spool lines (garbage, torn last lines)."""
        return sum(s.skipped for _path, s in (*self.loaded, *self.running))

    def summary(self) -> str:
        """One line: what the run did, how many spools it set aside, how many lines it skipped."""
        aside = sum(1 for r in self.refused if r.set_aside is not None)
        left = len(self.refused) - aside
        parts = [
            f"{len(self.loaded)} spool(s) loaded",
            f"{len(self.running)} still running" if self.running else "",
            f"{aside} set aside in quarantine/ (each with its .reason)" if aside else "",
            f"{left} refused and left where they are" if left else "",
            f"{self.skipped_lines} line(s) skipped as garbage" if self.skipped_lines else "",
        ]
        return ", ".join(filter(None, parts))

    def log_summary(self) -> None:
        """The summary: a warning when it says what no other line did (lines skipped as
        garbage: each refused spool has a warning of its own, and the command's error counts
        them), else information (``-v``)."""
        log.log(logging.WARNING if self.skipped_lines else logging.INFO, "ingest: %s", self.summary())


def find_spools(directories: Iterable[Path] = (), named: Iterable[Path] = ()) -> list[Found]:
    """The spools of spool directories (movable) and of paths named one by one: a file, or a
    job's output directory, whose ``spool/`` holds that job's spools (left in place)."""
    found = [Found(path, True) for directory in directories for path in _spools_in(directory)]
    for path in named:
        if path.is_dir():
            found += [Found(p, True) for p in _spools_in(path)]
            found += [Found(p, False) for p in _spools_in(path / "spool")]
        else:
            found.append(Found(path, False))
    return found


def _spools_in(directory: Path) -> list[Path]:
    """The ``*.jsonl`` entries of a directory, whatever they are (the loader checks), taken by
    name and never as a glob; dot files are temporaries of a copy in progress."""
    try:
        with os.scandir(directory) as entries:
            names = [e.name for e in entries if e.name.endswith(".jsonl") and not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [directory / name for name in sorted(names)]


def ingest_spools(
    store: Store, spools: Sequence[Found], *, trust: SpoolTrust, keep: bool = False
) -> IngestReport:
    """Load each spool, and move it to ``loaded/`` or ``quarantine/`` unless ``keep``.

    Raises:
        StoreError: the store failed (what was loaded before stays loaded and moved).
    """
    report = IngestReport()
    for spool in spools:
        try:
            opened = SpoolFile(spool.path)
        except FileNotFoundError:
            log.info("%s is gone before it was read (another ingest moved it?)", spool.path)
            report.vanished += 1
            continue
        except SpoolRefused as exc:
            report.refused.append(_refuse(spool, str(exc), move=spool.movable and not keep))
            continue
        with opened:
            try:
                loaded = load_spool(store, opened, owner_of=trust)
            except SpoolRefused as exc:
                report.refused.append(_refuse(spool, str(exc), move=spool.movable and not keep,
                                              fd=opened.fd, owner=trust(opened.stat.st_uid)))
                continue
            if not loaded.ended:
                report.running.append((spool.path, loaded))
                continue
            report.loaded.append((spool.path, loaded))
            if spool.movable and not keep:
                _move(spool.path, spool.path.parent / LOADED, opened.fd)
    return report


def _refuse(
    spool: Found, reason: str, *, move: bool, fd: int | None = None, owner: SpoolOwner | None = None
) -> Refused:
    """Set a refused spool aside (``move``) in ``quarantine/``, with the reason beside it."""
    if not move:
        return Refused(spool.path, reason, None)
    quarantine = spool.path.parent / QUARANTINE
    moved = _move(spool.path, quarantine, fd)
    if moved is None:
        return Refused(spool.path, reason, None)
    whose = f"owner: {owner.name} (uid {owner.uid})\n" if owner is not None else ""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with suppress(OSError):  # the spool is aside already: a missing note is not worth a failure
        atomic_write(quarantine / f"{moved.name}.reason",
                     f"{reason}\nfile: {spool.path}\n{whose}set aside: {stamp} by turingwatch ingest\n",
                     mode=0o600)
    return Refused(spool.path, reason, moved)


def _move(path: Path, directory: Path, fd: int | None) -> Path | None:
    """Move a spool into the ingest's own ``directory`` and make it 0600 (through ``fd``, the
    file read). Returns where it went, or None when it could not be moved (it stays, and the
    next ingest sees it again)."""
    _own_directory(directory)
    target = directory / path.name
    try:
        os.rename(path, target)
    except OSError as exc:
        log.warning("could not move %s to %s: %s", path, directory, exc.strerror)
        return None
    if fd is not None:
        with suppress(OSError):  # another user's file and the ingest is not root: 0700 covers it
            os.fchmod(fd, 0o600)
    return target


def _own_directory(directory: Path) -> None:
    """Make ``directory`` 0700, or check that it is this process's own: a real directory that
    no one else may write, and that no one else may read once checked."""
    with suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StoreError(f"{directory} is not a directory of the ingest's own ({exc.strerror}):"
                         " remove it, then ingest again") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise StoreError(f"{directory} is another user's or others may write it: remove it,"
                             " then ingest again")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
