"""The site's pages: every blueprint here is registered by ``webserver.create_app``.

(A placeholder until the page modules land: the app serves only the login and /api/v1/whoami.)
"""

from __future__ import annotations

from flask import Blueprint

BLUEPRINTS: list[Blueprint] = []
