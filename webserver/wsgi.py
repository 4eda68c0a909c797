"""The WSGI entry for another server than ``turingwatch web``: ``gunicorn webserver.wsgi:app``.

The configuration is read once at import, from $TURINGWATCH_CONFIG (else
/etc/turingwatch/turingwatch.toml), as the CLI reads it; logging goes to stderr.
"""

from __future__ import annotations

from watcher.logsetup import setup_logging
from webserver import create_app

setup_logging(0, False, progress=True)
app = create_app()
