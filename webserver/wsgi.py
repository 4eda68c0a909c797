"""The WSGI entry for another server than ``turingwatch web``: ``gunicorn webserver.wsgi:app``.

The configuration is read once at import, from $TURINGWATCH_CONFIG (else
/etc/turingwatch/turingwatch.toml), as the CLI reads it, and checked as ``turingwatch web``
checks it (``webserver.check_serving``): a refused configuration fails the import, so gunicorn
does not start. Logging goes to stderr.
"""

from __future__ import annotations

import logging

from watcher.config import load_config
from watcher.logsetup import setup_logging
from webserver import check_serving, create_app

setup_logging(0, False, progress=True)
logging.getLogger("webserver").setLevel(logging.getLogger("watcher").getEffectiveLevel())
_config = load_config()
check_serving(_config)
app = create_app(_config)
