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

The directories these files go to, when the watcher makes them for a job, come from
:func:`private_dir`: made 0700, and one that is already there is used only if it is this
user's own (not a link someone else planted, not another user's directory, not writable by
every user), so that nobody can lay a trap where a job writes.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import stat
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


def private_dir(path: Path | str, *, mode: int = 0o700) -> Path:
    """A directory this user may safely write into: made with ``mode`` if missing.

    Missing parents are made as ``mkdir -p`` makes them. A directory that is already there is
    kept as it is (its owner chose its mode) if it is this user's own: a symlink someone else
    made, another user's directory (one planted where a job's predictable output directory
    goes) and a directory every user may write to without the sticky bit are refused.

    Raises:
        OSError: it cannot be made, or it is refused (``PermissionError``, or
            ``NotADirectoryError`` for something else in the way); ``strerror`` says why.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(target, mode)
        made = True
    except FileExistsError:
        made = False
    me = os.geteuid()
    try:
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        link = os.lstat(target)
        if not stat.S_ISLNK(link.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(target)) from None
        if link.st_uid != me:  # a link of one's own (~/results -> /scratch/me) is fine
            raise PermissionError(errno.EPERM, f"a symlink made by {_user(link.st_uid)}, "
                                  "not by you", str(target)) from None
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != me:
            raise PermissionError(errno.EPERM, f"a directory of {_user(st.st_uid)}'s, not yours",
                                  str(target))
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            raise PermissionError(errno.EPERM, "a directory every user may write to", str(target))
        if made:  # the umask may have taken bits the caller asked for
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return target


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
