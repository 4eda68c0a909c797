"""Running a command with a pseudo-terminal, for tests of what turingwatch does on a terminal."""

from __future__ import annotations

import os


def read_until_closed(master: int) -> bytes:
    """Everything the child writes to the pty's other side, until it closes it; closes ``master``."""
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed its side (EIO on Linux)
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return b"".join(chunks)
