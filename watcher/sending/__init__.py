"""The senders: spool lines from a node to the server's ingest API (docs/sending.md).

Shared floor: ``run`` and ``attach`` send their session's spool while the job runs, and
``turingwatch ingest --send`` delivers what spools still hold undelivered.
"""

from __future__ import annotations

from watcher.sending.client import BadServerURL, Client, Reply, SendError
from watcher.sending.sender import SendingThread, SpoolSender, SpoolState, spools_under

__all__ = [
    "BadServerURL",
    "Client",
    "Reply",
    "SendError",
    "SendingThread",
    "SpoolSender",
    "SpoolState",
    "spools_under",
]
