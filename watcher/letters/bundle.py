"""The period bundle: ``<result_dir>/<period>.tar.gz``, what the web site and the mailer read.

Layout inside the archive (one top folder, so that extracting it makes one directory)::

    <period>/manifest.json                  format, period, when, and one summary per user
    <period>/users/<user>/report.json       the UserReport: findings, tables, jobs, totals
    <period>/users/<user>/letter.html       the letter as mailed (images as cid:<content id>)
    <period>/users/<user>/letter.txt        its plain-text part
    <period>/users/<user>/images/<cid>.png  its charts, named by Content-ID
    <period>/users/<user>/letter.json       subject, problem count, image list

The manifest comes first and each user's files are together, ``letter.json`` last, so that a
reader can stream the archive. The archive is written to a temporary file in the same
directory and renamed over the old one, so readers see the old bundle or the new one, never
half of one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from watcher import __version__
from watcher.analysis.model import (
    SEVERITY_ORDER,
    Finding,
    Period,
    RuleInfo,
    UserReport,
    to_json,
)
from watcher.config import Config, expand_path
from watcher.files import atomic_open
from watcher.letters.render import RenderedLetter, render_letter
from watcher.letters.view import LetterError

FORMAT = 1
_SAFE_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@-]*$")

Progress = Callable[[str], None]


class BundleError(LetterError):
    """A bundle cannot be written, or one being read is not a turingwatch bundle."""


def bundle_path(config: Config, period_id: str) -> Path:
    return expand_path(config.analysis.result_dir) / f"{period_id}.tar.gz"


def _plain(value: Any) -> Any:
    """What json cannot encode itself, one level at a time (the same form as ``to_json``).

    Letting the C encoder walk the report and call this only for dataclasses and dates is
    several times faster than converting the whole report in Python first.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, Finding):  # Finding.as_dict's order (metrics last), no deep copy
            out["metrics"] = out.pop("metrics")
        return out
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, default=_plain, separators=(",", ":")).encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tar.addfile(info, io.BytesIO(data))


def user_summary(report: UserReport) -> dict[str, Any]:
    counts = {s: 0 for s in SEVERITY_ORDER}
    for finding in report.findings:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    return {
        "user": report.user,
        "jobs": len(report.jobs),
        "problems": len({f.rule for f in report.findings}),
        "findings": counts,
        "analysis_id": report.analysis_id,
    }


def write_bundle(
    config: Config,
    period: Period,
    reports: list[UserReport],
    rules: Mapping[str, RuleInfo] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Render every user's letter and write the period's bundle atomically; return its path.

    ``rules`` (rule id -> RuleInfo) defaults to the configured rule set. Re-running a period
    replaces its bundle.
    """
    if rules is None:
        from watcher.analysis.rules import load_rules  # the analysis engine's, loaded lazily

        rules = {r.id: r for r in load_rules(config).rules}
    for report in reports:
        if not _SAFE_USER.match(report.user):
            raise BundleError(f"user name {report.user!r} cannot be a file name in a bundle")
    target = bundle_path(config, period.id)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"cannot create {target.parent}: {exc.strerror}") from None
    now = time.time()
    manifest = {
        "format": FORMAT,
        "period": to_json(period),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "turingwatch": __version__,
        "site": config.site.name,
        "users": [user_summary(r) for r in sorted(reports, key=lambda r: r.user)],
    }
    say = progress or (lambda _msg: None)
    try:
        with atomic_open(target) as out, tarfile.open(
            fileobj=out, mode="w:gz", compresslevel=6
        ) as tar:
            _add(tar, f"{period.id}/manifest.json", _json_bytes(manifest), now)
            for number, report in enumerate(sorted(reports, key=lambda r: r.user), 1):
                say(f"letter {number}/{len(reports)}: {report.user}")
                letter = render_letter(report, rules, config)
                _add_user(tar, f"{period.id}/users/{report.user}", report, letter, now)
    except OSError as exc:
        raise BundleError(f"cannot write bundle {target}: {exc.strerror or exc}") from None
    return target


def _add_user(tar: tarfile.TarFile, folder: str, report: UserReport,
              letter: RenderedLetter, mtime: float) -> None:
    _add(tar, f"{folder}/report.json", _json_bytes(report), mtime)
    _add(tar, f"{folder}/letter.html", letter.html.encode(), mtime)
    _add(tar, f"{folder}/letter.txt", letter.text.encode(), mtime)
    for cid, png in letter.images.items():
        _add(tar, f"{folder}/images/{cid}.png", png, mtime)
    meta = {"user": letter.user, "period": letter.period, "subject": letter.subject,
            "problems": letter.problems, "images": sorted(letter.images)}
    _add(tar, f"{folder}/letter.json", _json_bytes(meta), mtime)


# -- reading -------------------------------------------------------------------------------


@dataclass
class Bundle:
    """An opened bundle: its manifest, and its letters read one user at a time."""

    path: Path
    manifest: dict[str, Any]

    @property
    def period_id(self) -> str:
        return self.manifest["period"]["id"]

    @property
    def users(self) -> list[str]:
        return [u["user"] for u in self.manifest["users"]]

    def letters(self, only: Iterable[str] | None = None) -> Iterator[RenderedLetter]:
        """The letters, in user order, streamed from the archive (one user in memory)."""
        wanted = set(only) if only is not None else None
        files: dict[str, bytes] = {}
        with _open(self.path) as tar:
            for member in tar:
                parts = member.name.split("/")
                if len(parts) < 4 or parts[1] != "users" or not member.isfile():
                    continue
                user = parts[2]
                if wanted is not None and user not in wanted:
                    continue
                handle = tar.extractfile(member)
                files["/".join(parts[3:])] = handle.read() if handle else b""
                if parts[3] == "letter.json":
                    yield _letter(self.path, user, files)
                    files = {}


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r|gz")
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"cannot read bundle {path}: {exc}") from None


def _letter(path: Path, user: str, files: dict[str, bytes]) -> RenderedLetter:
    try:
        meta = json.loads(files["letter.json"])
        images = {cid: files[f"images/{cid}.png"] for cid in meta["images"]}
        return RenderedLetter(user, meta["period"], meta["subject"],
                              files["letter.html"].decode(), files["letter.txt"].decode(),
                              images, int(meta["problems"]))
    except (KeyError, ValueError) as exc:
        raise BundleError(f"bundle {path}: the letter of {user} is incomplete ({exc})") from None


def open_bundle(path: Path) -> Bundle:
    """Read a bundle's manifest (its first member) and check its format."""
    if not path.is_file():
        raise BundleError(f"no bundle at {path}")
    with _open(path) as tar:
        first = tar.next()
        handle = tar.extractfile(first) if first is not None else None
        if first is None or not first.name.endswith("/manifest.json") or handle is None:
            raise BundleError(f"{path} is not a turingwatch bundle (no manifest first)")
        try:
            manifest = json.loads(handle.read())
        except ValueError as exc:
            raise BundleError(f"{path}: unreadable manifest ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: bundle format {manifest.get('format')!r}, expected {FORMAT}")
    return Bundle(path, manifest)


def letter_for_browser(html: str, image_url: Callable[[str], str]) -> str:
    """The mailed HTML with each ``cid:`` image source replaced by ``image_url(content_id)``:
    what the web site serves, for example ``lambda cid: f"images/{cid}.png"``."""
    return re.sub(r'src="cid:([^"]+)"', lambda m: f'src="{image_url(m.group(1))}"', html)
