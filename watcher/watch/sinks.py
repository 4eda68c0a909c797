"""Where a watched job's spools go, beside its own output directory.

A sink takes the finished spool of each node of the job: a shared directory
(``sampler.site_spool_dir``) that the site's ``turingwatch ingest`` reads. The server takes the
same lines over HTTP while the job runs: :func:`start_sending` gives each watcher (``run`` on
the batch host, ``attach`` on the others) a sender thread for its own session's spool. A sink
or a sender that fails says so once and loses nothing of the job's own files: the card and
``report.html`` are written from the local spool either way.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from watcher.sending import SendingThread

from watcher.config import Config, expand_path
from watcher.files import copy_atomic
from watcher.spool import SpoolWriter

log = logging.getLogger(__name__)
# What a copy's name may hold of its label: the label comes from the job's environment
# (SLURM_CLUSTER_NAME), and a name must stay one name in the directory.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class SpoolSink(Protocol):
    """Takes a finished job's spools."""

    def deliver(self, spools: Sequence[Path], *, label: str) -> None: ...


class DirectorySink:
    """Leaves a copy of each spool in a shared directory, for ``turingwatch ingest``.

    Each copy appears whole or not at all (an unpredictable temporary, then renamed), so the
    ingest never reads a half-copied spool and nobody can plant a link where it writes;
    ``label`` (cluster and job) keeps the names of two jobs apart.

    A spool holds the job's command lines (passwords in arguments included), so a copy is
    readable by its owner only (0600; root runs the ingest), or also by the directory's group
    (0640) when the directory is set-group-ID: then the copy's group is the directory's, one the
    site chose for its service user (docs/store.md), never the user's own group.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def deliver(self, spools: Sequence[Path], *, label: str) -> None:
        try:
            mode = copy_mode(self.directory)
            safe = _UNSAFE.sub("_", label)
            for path in spools:
                copy_atomic(path, self.directory / f"{safe}.{path.name}", mode=mode)
        except OSError as exc:
            log.warning("could not leave the spools in %s: %s", self.directory, exc)

    def __repr__(self) -> str:
        return f"DirectorySink({str(self.directory)!r})"


def copy_mode(directory: Path) -> int:
    """0640 in a set-group-ID directory (its group reads the copies), else 0600."""
    return 0o640 if os.stat(directory).st_mode & stat.S_ISGID else 0o600


def configured_sinks(config: Config) -> list[SpoolSink]:
    """The sinks the site configured for every watched job (none by default)."""
    sinks: list[SpoolSink] = []
    if config.sampler.site_spool_dir:
        sinks.append(DirectorySink(expand_path(config.sampler.site_spool_dir)))
    return sinks


def start_sending(config: Config, spool_path: Path, writer: SpoolWriter | None) -> SendingThread | None:
    """A running sender of this session's spool to ``server.url``; None when none is set or
    it cannot start (said once: the job goes on, its spool stays in the output directory).

    ``writer`` gets the bound ``server.max_spool_bytes`` on what is not delivered yet.
    """
    if not config.server.url:
        return None
    try:
        from watcher.sending import SendingThread, SpoolSender

        server = config.server
        sender = SpoolSender(server, config.auth)
        sender.add(spool_path)
        if writer is not None:
            writer.bound(server.max_spool_bytes, lambda: sender.delivered(spool_path))
        thread = SendingThread(sender, interval_s=server.send_interval_s,
                               final_wait_s=2 * server.send_timeout_s)
        thread.start()
        return thread
    except Exception as exc:  # no sending, but the job is watched and runs
        log.warning("not sending to %s: %s; the spool stays in the output directory",
                    config.server.url, exc)
        return None
