"""The site's pages: every blueprint here is registered by ``webserver.create_app``.

home (/), jobs (/jobs), job (/jobs/<cluster>/<job_id>), letters (/letters/…), admin (/admin)
and api (/api/v1/…). Each reads only through webserver.data, with the user filter that
webserver.pages.common.scope() makes of the viewer.
"""

from __future__ import annotations

from flask import Blueprint

from webserver.pages import admin, api, home, job, jobs, letters

BLUEPRINTS: list[Blueprint] = [home.bp, jobs.bp, job.bp, letters.bp, admin.bp, api.bp]
