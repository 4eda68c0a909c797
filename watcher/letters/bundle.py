"""The period bundle: ``<result_dir>/<period>.tar.gz``, what the web site and the mailer read.

Layout inside the archive (one top folder, so that extracting it makes one directory)::

    <period>/manifest.json                  format, period, when, and one summary per user
    <period>/users/<id>/report.json         the UserReport: findings, tables, jobs, totals
    <period>/users/<id>/letter.html         the letter as mailed (images as cid:<content id>)
    <period>/users/<id>/letter.txt          its plain-text part
    <period>/users/<id>/images/<cid>.png    its charts, named by Content-ID
    <period>/users/<id>/letter.json         user, subject, problem count, image list
    <period>/skipped.json                   only when letters are missing: who, and why

``<id>`` is the user's :func:`~watcher.letters.view.user_id`: the login itself, or for a
name that is no file name (a space, a slash, ``..``) an escaped form of it, so no member can
name a path outside its folder; ``letter.json`` holds the name itself.

The manifest comes first and each user's files are together, ``letter.json`` last, so that a
reader can stream the archive. The archive is written to a temporary file in the same
directory and renamed over the old one, so readers see the old bundle or the new one, never
half of one. A user whose letter cannot be built is left out, logged and listed in
``skipped.json``; the others' letters are written, and :class:`SkippedLetters` says so after.

Reading trusts nothing: :func:`open_bundle` reads the whole archive once and refuses it when
a member is not a plain file (a link, a device), has an absolute path or a ``..``, lies
outside ``<period>/``, or when a letter names another period or another user than its folder.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

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
from watcher.letters.view import LetterError, user_id
from watcher.letters.waste import standings

log = logging.getLogger(__name__)

FORMAT = 1
SKIPPED = "skipped.json"
_PERIOD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# What a member's path parts may be: user ids (see user_id), file names, Content-IDs.
_MEMBER_PART = re.compile(r"[A-Za-z0-9_~%][A-Za-z0-9_.@~%-]*")

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
    # A lone surrogate (bytes decoded with surrogateescape) becomes its JSON escape \udcXX,
    # which reads back as the same string.
    return json.dumps(value, ensure_ascii=False, default=_plain, separators=(",", ":")).encode(
        "utf-8", "backslashreplace")


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
        "id": user_id(report.user),
        "analysis_id": f"{report.period.id}:{user_id(report.user)}",
    }


class SkippedLetters(BundleError):
    """The bundle was written, without the letters of some users (``skipped``: user -> why)."""

    def __init__(self, path: Path, skipped: dict[str, str], total: int) -> None:
        self.path, self.skipped, self.total = path, skipped, total
        named = "; ".join(f"{user_id(u)}: {why}" for u, why in list(skipped.items())[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        super().__init__(
            f"the letters of {len(skipped)} of {total} users could not be built and are not in "
            f"{path} ({named}{more}); the others are"
        )


def write_bundle(
    config: Config,
    period: Period,
    reports: list[UserReport],
    rules: Mapping[str, RuleInfo] | None = None,
    progress: Progress | None = None,
    on_letter: Callable[[int, int], None] | None = None,
) -> Path:
    """Render every user's letter and write the period's bundle atomically; return its path.

    ``progress`` hears a line per letter; ``on_letter(done, total)`` is called after each
    (a progress bar's feed).

    ``rules`` (rule id -> RuleInfo) defaults to the configured rule set. Re-running a period
    replaces its bundle. A letter that cannot be built leaves out that user only (logged,
    listed in ``skipped.json``), and :class:`SkippedLetters` is raised once the bundle with
    the others is in place; when no letter at all can be built (a broken template or
    subject), BundleError is raised and the old bundle stays.
    """
    if rules is None:
        from watcher.analysis.rules import load_rules  # the analysis engine's, loaded lazily

        rules = {r.id: r for r in load_rules(config).rules}
    check_period_id(period.id)
    ordered = sorted(reports, key=lambda r: r.user)
    folders = [user_id(r.user) for r in ordered]
    if len(set(folders)) != len(folders):
        raise BundleError(f"period {period.id}: a user has two reports")
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
        "users": [user_summary(r) for r in ordered],
    }
    say = progress or (lambda _msg: None)
    skipped: dict[str, str] = {}
    ranks = standings(ordered)   # each letter may say where its user stands among them all
    first_error: Exception | None = None
    try:
        with atomic_open(target) as out, tarfile.open(
            fileobj=out, mode="w:gz", compresslevel=6
        ) as tar:
            _add(tar, f"{period.id}/manifest.json", _json_bytes(manifest), now)
            for number, (report, folder) in enumerate(zip(ordered, folders, strict=True), 1):
                say(f"letter {number}/{len(ordered)}: {folder}")
                try:
                    # Everything of one user is made before any of it is added: a letter
                    # that fails leaves no half folder behind.
                    files = _user_files(report, render_letter(report, rules, config,
                                                                ranks.get(report.user)))
                except Exception as exc:  # one user's letter never stops the others'
                    first_error = first_error or exc
                    skipped[report.user] = f"{type(exc).__name__}: {exc}"
                    log.error("period %s: the letter of %s cannot be built, left out: %s",
                              period.id, folder, skipped[report.user],
                              exc_info=not isinstance(exc, LetterError))
                    continue
                for name, data in files:
                    _add(tar, f"{period.id}/users/{folder}/{name}", data, now)
                if on_letter is not None:
                    on_letter(number, len(ordered))
            if first_error is not None and len(skipped) == len(ordered):
                raise BundleError(
                    f"no letter of {period.id} could be built; the first error: {first_error}"
                ) from first_error
            if skipped:
                listed = [{"user": u, "id": user_id(u), "reason": why} for u, why in skipped.items()]
                _add(tar, f"{period.id}/{SKIPPED}", _json_bytes({"users": listed}), now)
    except OSError as exc:
        raise BundleError(f"cannot write bundle {target}: {exc.strerror or exc}") from None
    if skipped:
        raise SkippedLetters(target, skipped, len(ordered))
    return target


def _user_files(report: UserReport, letter: RenderedLetter) -> list[tuple[str, bytes]]:
    """One user's members, relative to their folder, ``letter.json`` last."""
    meta = {"user": letter.user, "period": letter.period, "subject": letter.subject,
            "problems": letter.problems, "images": sorted(letter.images)}
    return [
        ("report.json", _json_bytes(report)),
        ("letter.html", letter.html.encode()),
        ("letter.txt", letter.text.encode()),
        *((f"images/{cid}.png", png) for cid, png in letter.images.items()),
        ("letter.json", _json_bytes(meta)),
    ]


# -- reading -------------------------------------------------------------------------------


def check_period_id(period_id: object) -> str:
    """The period id when it can name a folder (``2026-W47``, ``2026-11``), else BundleError."""
    if not isinstance(period_id, str) or not _PERIOD_ID.fullmatch(period_id):
        raise BundleError(f"{period_id!r} is not a period id")
    return period_id


@dataclass
class Bundle:
    """An opened bundle: its manifest, and its letters read one user at a time."""

    path: Path
    manifest: dict[str, Any]
    with_letter: frozenset[str] = frozenset()     # the ids of the users who have a letter
    skipped_reasons: dict[str, str] = dataclasses.field(default_factory=dict)  # by id

    @property
    def period_id(self) -> str:
        return self.manifest["period"]["id"]

    @property
    def users(self) -> list[str]:
        return [u["user"] for u in self.manifest["users"]]

    @property
    def skipped(self) -> dict[str, str]:
        """The users of the manifest who have no letter in the bundle, and why."""
        return {user: self.skipped_reasons.get(user_id(user), "no letter in the bundle")
                for user in self.users if user_id(user) not in self.with_letter}

    def letters(self, only: Iterable[str] | None = None) -> Iterator[RenderedLetter]:
        """The letters, in user order, streamed from the archive (one user in memory)."""
        wanted = {user_id(u) for u in only} if only is not None else None
        files: dict[str, dict[str, bytes]] = {}
        with _open(self.path) as tar:
            for member in tar:
                parts = _checked(self.path, member, self.period_id)
                if len(parts) < 4 or parts[1] != "users" or not member.isfile():
                    continue
                folder = parts[2]
                if wanted is not None and folder not in wanted:
                    continue
                handle = tar.extractfile(member)
                rest = "/".join(parts[3:])
                files.setdefault(folder, {})[rest] = handle.read() if handle else b""
                if rest == "letter.json":
                    yield _letter(self.path, self.period_id, folder, files.pop(folder))


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r|gz")
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"cannot read bundle {path}: {exc}") from None


def _checked(path: Path, member: tarfile.TarInfo, period_id: str) -> list[str]:
    """The member's path parts, once it is known to be a plain file or folder inside
    ``<period>/`` whose names are all ids; BundleError otherwise."""
    parts = member.name.split("/")
    if not (member.isfile() or member.isdir()):
        kind = "a link" if member.issym() or member.islnk() else "not a plain file"
        raise BundleError(f"bundle {path}: member {member.name!r} is {kind}; refused")
    if member.isdir() and parts[-1] == "":
        parts = parts[:-1]
    if (member.name.startswith("/") or parts[0] != period_id
            or any(not _MEMBER_PART.fullmatch(p) or p in (".", "..") for p in parts)):
        raise BundleError(f"bundle {path}: member {member.name!r} is outside {period_id}/; "
                          "refused")
    return parts


def _letter_meta(path: Path, period_id: str, folder: str,
                 handle: IO[bytes] | None) -> dict[str, Any]:
    """A ``letter.json``, once it names the user of its folder and the bundle's period."""
    try:
        meta = json.loads(handle.read() if handle else b"")
        user, period = meta["user"], meta["period"]
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"bundle {path}: unreadable users/{folder}/letter.json ({exc})") from None
    if not isinstance(user, str) or user_id(user) != folder:
        raise BundleError(f"bundle {path}: the letter in users/{folder} is for {user!r}; refused")
    if period != period_id:
        raise BundleError(f"bundle {path}: the letter of {folder} is for period {period!r}, "
                          f"not {period_id}; refused")
    return meta


def _letter(path: Path, period_id: str, folder: str, files: dict[str, bytes]) -> RenderedLetter:
    meta = _letter_meta(path, period_id, folder, io.BytesIO(files["letter.json"]))
    try:
        images = {cid: files[f"images/{cid}.png"] for cid in meta["images"]}
        return RenderedLetter(meta["user"], meta["period"], str(meta["subject"]),
                              files["letter.html"].decode(), files["letter.txt"].decode(),
                              images, int(meta["problems"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"bundle {path}: the letter of {folder} is incomplete ({exc})") from None


def open_bundle(path: Path) -> Bundle:
    """Read a bundle's manifest (its first member), check its format, and check every member
    once: a bundle with a member that could point outside it is refused whole, before any
    letter of it is read."""
    if not path.is_file():
        raise BundleError(f"no bundle at {path}")
    with_letter: set[str] = set()
    reasons: dict[str, str] = {}
    try:
        with _open(path) as tar:
            first = tar.next()
            handle = tar.extractfile(first) if first is not None and first.isfile() else None
            if first is None or not first.name.endswith("/manifest.json") or handle is None:
                raise BundleError(f"{path} is not a turingwatch bundle (no manifest first)")
            manifest = _manifest(path, handle.read())
            period_id = manifest["period"]["id"]
            _checked(path, first, period_id)
            for member in tar:
                parts = _checked(path, member, period_id)
                if len(parts) == 4 and parts[1] == "users" and parts[3] == "letter.json":
                    _letter_meta(path, period_id, parts[2], tar.extractfile(member))
                    with_letter.add(parts[2])
                elif parts[1:] == [SKIPPED] and member.isfile():
                    reasons.update(_skipped(path, tar.extractfile(member)))
    except tarfile.TarError as exc:
        raise BundleError(f"cannot read bundle {path}: {exc}") from None
    return Bundle(path, manifest, frozenset(with_letter), reasons)


def _manifest(path: Path, data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleError(f"{path}: bundle format {found!r}, expected {FORMAT}")
    try:
        check_period_id(manifest["period"]["id"])
        if not all(isinstance(u["user"], str) for u in manifest["users"]):
            raise TypeError("a user that is not a name")
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{path}: manifest without period or users ({exc})") from None
    except BundleError as exc:
        raise BundleError(f"{path}: manifest: {exc}") from None
    return manifest


def _skipped(path: Path, handle: IO[bytes] | None) -> dict[str, str]:
    """The ids in ``skipped.json`` and why each letter is missing."""
    try:
        listed = json.loads(handle.read() if handle else b"")["users"]
        return {str(entry["id"]): str(entry["reason"]) for entry in listed}
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable {SKIPPED} ({exc})") from None


def letter_for_browser(html: str, image_url: Callable[[str], str]) -> str:
    """The mailed HTML with each ``cid:`` image source replaced by ``image_url(content_id)``:
    what the web site serves, for example ``lambda cid: f"images/{cid}.png"``."""
    return re.sub(r'src="cid:([^"]+)"', lambda m: f'src="{image_url(m.group(1))}"', html)
