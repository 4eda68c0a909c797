"""Where a watched job's spools go when it ends, beside its own output directory.

A sink takes the finished spool of each node of the job. Today there is one kind: a shared
directory (``sampler.site_spool_dir``) that the site's ``turingwatch ingest`` reads. The server
(a later sink) takes the same spool lines over HTTP. A sink that fails says so once and loses
nothing of the job's own files: the card and ``report.html`` are written either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from watcher.config import Config, expand_path
from watcher.files import copy_atomic

log = logging.getLogger(__name__)


class SpoolSink(Protocol):
    """Takes a finished job's spools."""

    def deliver(self, spools: Sequence[Path], *, label: str) -> None: ...


class DirectorySink:
    """Leaves a copy of each spool in a shared directory, for ``turingwatch ingest``.

    Each copy appears whole or not at all (an unpredictable temporary, then renamed), so the
    ingest never reads a half-copied spool and nobody can plant a link where it writes;
    ``label`` (cluster and job) keeps the names of two jobs apart.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def deliver(self, spools: Sequence[Path], *, label: str) -> None:
        try:
            for path in spools:
                copy_atomic(path, self.directory / f"{label}.{path.name}", mode=0o640)
        except OSError as exc:
            log.warning("could not leave the spools in %s: %s", self.directory, exc)

    def __repr__(self) -> str:
        return f"DirectorySink({str(self.directory)!r})"


def configured_sinks(config: Config) -> list[SpoolSink]:
    """The sinks the site configured for every watched job (none by default)."""
    sinks: list[SpoolSink] = []
    if config.sampler.site_spool_dir:
        sinks.append(DirectorySink(expand_path(config.sampler.site_spool_dir)))
    return sinks
