"""Files that appear whole or not at all: the card, ``summary.json``, the period bundle, the
spools handed to a site directory and the mail outbox.

Each write goes to a temporary file in the target's own directory (so the final rename stays
on one file system), with a name nobody can predict, created with ``O_CREAT | O_EXCL |
O_NOFOLLOW`` (``tempfile.mkstemp``), so that a link planted in a shared directory such as a
job's output directory or a site spool directory is never followed. The data is synced, the
mode set with ``fchmod`` (the umask does not apply), and the file renamed over the target
with ``os.replace``.

What a crash leaves: before the rename, the old target untouched and, only if the process
died without running its cleanup, a dot file ``.<name>.<random>.tmp`` beside it; after the
rename, the new file. Any exception on the way removes the temporary and re-raises.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


@contextmanager
def atomic_open(path: Path | str, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; it replaces ``path`` on success.

    Raises:
        OSError: the directory is missing or not writable, the disk is full, … (the old
            file, if any, is left as it was).
    """
    target = Path(path)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        # Whatever stopped the write (an error, KeyboardInterrupt), the old file stays and
        # the half-written temporary goes.
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def atomic_write(path: Path | str, data: str | bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8), atomically."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_open(path, mode=mode) as out:
        out.write(payload)


def copy_atomic(src: Path | str, dst: Path | str, *, mode: int = 0o644) -> None:
    """Copy ``src`` to ``dst`` so that ``dst`` appears whole or not at all."""
    with open(src, "rb") as source, atomic_open(dst, mode=mode) as out:
        shutil.copyfileobj(source, out, _CHUNK)
