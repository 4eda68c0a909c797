"""The one typed configuration object.

Values come, lowest precedence first, from the defaults below, a TOML file (``--config``, else
``$TURINGWATCH_CONFIG``, else ``/etc/turingwatch/turingwatch.toml`` when it exists) and
``TURINGWATCH_<SECTION>_<KEY>`` environment variables. Every value is checked against its
declared type and bounds; errors name the key and where its value came from.

A section is a frozen dataclass; a field's ``metadata`` carries its help text, bounds and
whether it is a secret (see :func:`setting`). That table is the one source of ``turingwatch
config show --defaults`` and of ``docs/settings.md`` (``tests/test_settings_documented.py``
checks that the file is the rendering of the table).

Adding a setting is adding one field. Adding a section is one dataclass: declare it here, add
one field of its type to :class:`Config`, regenerate ``docs/settings.md`` (``turingwatch config
show --defaults --markdown``); the TOML table, the environment names and ``config show`` follow
from the field. A file with a section of :data:`RESERVED_SECTIONS` (those the daemons of later
versions read) is refused with "upgrade" until that section is declared; declaring it is enough.

Renamed settings stay readable: :data:`RENAMED_SECTIONS` and :data:`RENAMED_KEYS` map old
spellings to new ones, in the TOML file and in the environment; each load that meets one logs a
single warning naming the new spelling (a warning, not an error: ``turingwatch run`` must never
fail on its configuration). Where a source gives both spellings, the new one wins.

Secrets live in files named by ``*_file`` settings marked ``secret="file"``; :func:`read_secret`
is the one reader. A setting marked ``secret="value"`` holds the secret itself: ``config show``
and error messages mask it.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import logging
import math
import os
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watcher import __version__
from watcher.errors import ConfigError

log = logging.getLogger(__name__)

SYSTEM_CONFIG = Path("/etc/turingwatch/turingwatch.toml")
ENV_PREFIX = "TURINGWATCH_"
# Variables under the prefix that are not settings (read by other parts of the system).
_NOT_SETTINGS = {"TURINGWATCH_CONFIG"}
# Where the site side keeps its files unless told otherwise: the store, bundles, outbox.
DATA_DIR = "~/.local/share/turingwatch"
MASK = "********"

# Old spellings that are still read (with a warning), old -> new.
RENAMED_SECTIONS = {"watcher": "sampler"}
RENAMED_KEYS = {
    "site.templates_dir": "letters.templates_dir",
    "site.letter_max_rows": "letters.max_rows",
    "site.letter_charts": "letters.charts",
    "site.letter_url": "letters.url",
    "site.news": "letters.news",
    "mail.subject": "letters.subject",
    "mail.all_good": "letters.all_good",
}
# Sections that later versions read (the daemons): a file that has one was written for a
# newer turingwatch, which deserves a clearer answer than "unknown section".
RESERVED_SECTIONS: tuple[str, ...] = ()


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
    secret: typing.Literal["file", "value"] | None = None,
) -> Any:
    """Declare a setting: its default, one line of help, and optional bounds.

    ``secret="file"``: the value names a file holding a secret (read it with
    :func:`read_secret`); ``secret="value"``: the value is the secret, never shown.
    """
    meta = {"help": help, "min": min, "max": max, "choices": choices, "secret": secret}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SamplerSettings:
    interval_s: float = setting(10.0, "seconds between two samples of the job", min=0.5, max=3600)
    output_dir: str = setting(
        "turingwatch-{job}",
        "where run/attach write spools, the store, report.html and summary.json; "
        "{job} is the Slurm job id, or 'local-<time>' outside Slurm",
    )
    gpu: bool = setting(True, "sample GPUs through NVML when the library is present")
    top_processes: int = setting(5, "processes listed in the report card", min=0, max=100)
    peer_wait_s: float = setting(
        30.0, "how long the batch host waits for other nodes' spools to end", min=0, max=3600
    )
    site_spool_dir: str = setting(
        "",
        "a shared directory where each finished job also leaves its spools for the site's "
        "store (`turingwatch ingest`); empty: none",
    )


@dataclass(frozen=True)
class StoreSettings:
    path: str = setting(
        f"{DATA_DIR}/turingwatch.duckdb",
        "the DuckDB store used by import-accounting, analyze and mail",
    )
    memory_limit: str = setting("", "DuckDB memory_limit (e.g. '4GB'); empty: DuckDB's default")
    threads: int = setting(0, "DuckDB worker threads; 0: DuckDB's default", min=0, max=1024)
    service_user: str = setting(
        "",
        "the account the site's commands run as, if not root: spool files it owns, like root's, "
        "may hold any user's sessions (`turingwatch ingest`); empty: root only",
    )


@dataclass(frozen=True)
class SlurmSettings:
    sacct: str = setting("sacct", "the sacct command (import-accounting)")
    squeue: str = setting("squeue", "the squeue command (a job's time limit and start)")
    scontrol: str = setting(
        "scontrol",
        "the scontrol command (the cluster name; listpids when a job's processes are found "
        "no other way)",
    )
    sbatch: str = setting("sbatch", "the sbatch command (submitting jobs)")
    salloc: str = setting("salloc", "the salloc command (interactive allocations)")
    scancel: str = setting("scancel", "the scancel command (cancelling jobs)")
    command_timeout_s: float = setting(
        30.0,
        "seconds squeue, scontrol, sbatch and scancel may take before they are killed",
        min=1,
        max=3600,
    )
    sacct_timeout_s: float = setting(
        600.0,
        "seconds one sacct call (one import window) may take before it is killed",
        min=1,
        max=86400,
    )
    cluster: str = setting("", "cluster name recorded with samples; empty: from Slurm or hostname")
    import_chunk_days: float = setting(
        1.0, "accounting is imported in windows of this many days", min=0.01, max=366
    )
    import_first_days: float = setting(
        7.0, "how far back the first import-accounting reaches, in days", min=0.01, max=3660
    )
    import_overlap_minutes: float = setting(
        60.0,
        "an incremental import starts this long before the last imported window ended, "
        "to catch records slurmdbd stored late",
        min=0,
        max=10080,
    )


@dataclass(frozen=True)
class AnalysisSettings:
    rules_file: str = setting("", "rule file; empty: the rules shipped with turingwatch")
    period: str = setting(
        "week", "period length for analyze and letters", choices=("day", "week", "month")
    )
    timezone: str = setting("UTC", "time zone in which periods are calendar-aligned")
    result_dir: str = setting(
        f"{DATA_DIR}/bundles", "where period bundles (<period>.tar.gz) are written"
    )


@dataclass(frozen=True)
class AdviceSettings:
    """The concrete request each resource finding ends with: what was measured, plus a margin."""

    cpu_percentile: float = setting(
        0.9, "cores to request: this quantile of the cores busy or waiting over the run",
        min=0.5, max=1.0,
    )
    cpu_margin: float = setting(
        1.1, "cores to request: the measured cores beyond the first times this, plus one, "
        "rounded up (a serial job stays at 1)", min=1.0, max=4.0
    )
    mem_margin: float = setting(
        1.2, "memory to request: the peak memory times this", min=1.0, max=4.0
    )
    mem_step_bytes: int = setting(
        1 << 30, "memory to request is rounded up to a multiple of this (bytes)",
        min=1 << 20, max=1 << 40,
    )
    time_margin: float = setting(
        1.25, "time limit to request: the longest completed run times this", min=1.0, max=10.0
    )
    time_step_s: float = setting(
        900.0, "time limit to request is rounded up to a multiple of this (seconds)",
        min=60, max=86400,
    )
    min_time_s: float = setting(
        300.0, "the shortest time limit ever advised (seconds)", min=60, max=86400
    )


@dataclass(frozen=True)
class EnergySettings:
    cpu_watts_per_core: float = setting(
        10.0, "estimated power of one busy core, in watts", min=0, max=1000
    )
    grid_co2_g_per_kwh: float = setting(
        0.0, "grid carbon intensity in g CO2e/kWh; 0 leaves CO2 out of reports", min=0, max=5000
    )


@dataclass(frozen=True)
class SiteSettings:
    name: str = setting("HPC cluster", "the site name shown in letters and reports")
    web_url: str = setting("", "base URL of the reporting web site; empty: no links")
    contact: str = setting("", "support contact shown in letters")
    feedback_url: str = setting(
        "", "feedback link shown in letters; letter_ref=<period>:<user> is added to it"
    )
    job_url: str = setting(
        "",
        "the web site's page of a job, with {job_id}, {cluster}, {user} and {web_url}, "
        "e.g. '{web_url}/jobs/{job_id}'; letters link job ids to it; empty: no links",
    )


@dataclass(frozen=True)
class LettersSettings:
    subject: str = setting(
        "{site}: your usage summary for {period}",
        "letter subject, with {site}, {period}, {user} and {problems} (number of problems)",
    )
    all_good: str = setting(
        "letter",
        "what users with no problem found get: a short 'all good' letter, or none",
        choices=("letter", "none"),
    )
    news: str = setting(
        "", "news from the admins, shown in every letter; blank lines separate paragraphs"
    )
    url: str = setting(
        "",
        "where a letter can be read on the web site, with {period}, {user} and {web_url}; "
        "empty: no 'read it on the web' link",
    )
    templates_dir: str = setting(
        "", "directory of letter templates that override the shipped ones (same names)"
    )
    max_rows: int = setting(
        5, "rows shown per table in a letter; the rest are counted", min=1, max=1000
    )
    charts: bool = setting(True, "draw charts of the worst jobs in letters")
    show_rank: bool = setting(
        True, "tell each user their rank among the period's users by resources left idle"
    )
    cores_per_node: int = setting(
        64, "cores of a typical node, to say idle core-hours as idle nodes", min=1, max=100000
    )


@dataclass(frozen=True)
class MailSettings:
    smtp_host: str = setting("localhost", "SMTP server")
    smtp_port: int = setting(25, "SMTP port", min=1, max=65535)
    security: str = setting(
        "none", "transport security", choices=("none", "starttls", "ssl")
    )
    username: str = setting("", "SMTP login; empty: no login")
    password_file: str = setting("", "file holding the SMTP password", secret="file")
    sender: str = setting("turingwatch@localhost", "From address")
    reply_to: str = setting("", "Reply-To address")
    cc: list[str] = setting([], "addresses copied on every letter")
    domain: str = setting("", "recipient is <user>@<domain> when no mapping names the user")
    address_map_file: str = setting("", "file of 'user address' lines")
    use_gecos: bool = setting(False, "take the address from the GECOS field when it holds one")
    rate_per_minute: float = setting(60.0, "letters sent per minute at most", min=0.1, max=100000)
    skip_users: list[str] = setting(
        ["root", "nobody"], "users never written to; shell patterns such as 'svc-*' allowed"
    )
    skip_system_accounts: bool = setting(
        True, "never write to accounts whose UID is below min_uid (service accounts)"
    )
    min_uid: int = setting(1000, "lowest UID of a person's account", min=0, max=2**31)
    opt_out_file: str = setting(
        "", "file of users who asked for no letters, one a line ('#' starts a comment)"
    )
    timeout_s: float = setting(30.0, "SMTP connection and command timeout", min=1, max=600)
    retry_attempts: int = setting(
        3, "tries per letter within one run on temporary SMTP errors", min=1, max=20
    )
    retry_backoff_s: float = setting(
        2.0, "wait before the first retry; doubled before each next one", min=0, max=600
    )
    outbox: str = setting(f"{DATA_DIR}/outbox", "where mail --dry-run writes .eml files")
    ledger: str = setting(
        "", "sent-ledger (SQLite) file; empty: mail-ledger.sqlite3 next to the store"
    )


@dataclass(frozen=True)
class ServerSettings:
    listen: str = setting(
        "127.0.0.1:8740",
        "host:port `turingwatch server` listens on ([::1]:port for IPv6); the only writer of "
        "the site store",
    )
    url: str = setting(
        "",
        "the server senders deliver to (e.g. http://head:8740); empty: run and attach send "
        "nothing and keep their spools in the job's output directory only",
    )
    tls_cert_file: str = setting("", "PEM certificate: the server speaks HTTPS when it and the key are set")
    tls_key_file: str = setting("", "PEM private key of tls_cert_file", secret="file")
    tls_ca_file: str = setting(
        "", "CA bundle senders check the server's certificate against; empty: the system's"
    )
    max_body_bytes: int = setting(
        16 * 2**20, "largest ingest request body the server reads (413 beyond)", min=1024, max=2**31
    )
    threads: int = setting(8, "HTTP worker threads of the server", min=1, max=256)
    apply_threads: int = setting(
        2, "threads storing batches of different sessions side by side (about one per core)",
        min=1, max=64,
    )
    journal_dir: str = setting(
        f"{DATA_DIR}/journal",
        "where the server keeps accepted batches, fsynced, until they are in the store",
    )
    publish_dir: str = setting(
        f"{DATA_DIR}/published",
        "where the server publishes the read-only snapshot, Parquet and bundles for readers",
    )
    publish_interval_s: float = setting(
        60.0, "seconds between publications when something changed; 0: only at start",
        min=0, max=86400,
    )
    import_interval_s: float = setting(
        3600.0, "seconds between accounting imports; 0: the server imports none", min=0, max=86400 * 7
    )
    refresh_interval_s: float = setting(
        3600.0, "seconds between analyses of the open period; 0: closed periods only",
        min=0, max=86400 * 7,
    )
    mail_letters: bool = setting(
        False, "mail each closed period's letters (the mailer's ledger sends each once)"
    )
    send_interval_s: float = setting(
        30.0, "seconds between two batches a sender (run, attach) sends", min=1, max=3600
    )
    send_timeout_s: float = setting(
        10.0, "how long a sender waits for the server's answer to one batch", min=0.5, max=600
    )
    send_batch_bytes: int = setting(
        4 * 2**20, "the most spool bytes a sender puts in one request", min=4096, max=2**30
    )
    max_spool_bytes: int = setting(
        256 * 2**20,
        "undelivered spool bytes a sender keeps per session before it warns and keeps only "
        "the newest end line",
        min=2**16, max=2**40,
    )


@dataclass(frozen=True)
class AuthSettings:
    mode: str = setting(
        "munge",
        "how senders prove who they are: munge credentials, or an HMAC of a shared key",
        choices=("munge", "hmac"),
    )
    munge_socket: str = setting("", "munged's socket; empty: munge's own default")
    hmac_key_file: str = setting(
        "", "file holding the shared key of mode hmac (readable by root and the server only)",
        secret="file",
    )
    service_users: list[str] = setting(
        [], "users besides root that may send any job's samples and node-wide sessions"
    )
    max_age_s: float = setting(
        300.0, "oldest credential the server accepts, and a munge credential's TTL",
        min=1, max=86400,
    )
    owner_cache_s: float = setting(
        300.0, "how long the server remembers a job's owner as Slurm gave it", min=0, max=86400
    )


@dataclass(frozen=True)
class DistributorSettings:
    partition: str = setting("", "partition of the scrape allocations; empty: Slurm's default")
    account: str = setting("", "account charged for the scrape allocations; empty: the user's default")
    qos: str = setting("", "QOS of the scrape allocations; empty: the partition's default")
    mem: str = setting("256M", "memory each scrape allocation asks for (sbatch --mem)")
    time_s: float = setting(
        600.0, "how long one scrape allocation samples its node (its --duration)", min=30, max=86400
    )
    concurrent: int = setting(4, "scrape allocations at most at once", min=1, max=10000)
    allocation_timeout_s: float = setting(
        120.0, "how long a scrape job may wait to start before it is cancelled", min=5, max=86400
    )
    cooldown_s: float = setting(
        1800.0, "how long a node sampled is left alone before it is sampled again", min=0, max=86400 * 7
    )
    interval_s: float = setting(30.0, "seconds between two looks at the queue", min=1, max=3600)
    job_name: str = setting(
        "turingwatch-scrape",
        "name of the scrape jobs: they are exempt from the rules and the letters by this name",
    )
    state_dir: str = setting(
        f"{DATA_DIR}/distributor",
        "where the distributor keeps distributor.state (what the server's status and /metrics show)",
    )


@dataclass(frozen=True)
class WebSettings:
    """The reporting web site (``turingwatch web``): it reads only what the server publishes."""

    listen: str = setting("127.0.0.1:8741", "address and port the web site listens on")
    threads: int = setting(8, "threads serving requests", min=1, max=256)
    oidc_discovery_url: str = setting(
        "", "the OpenID Connect provider's discovery document (.../.well-known/openid-configuration)"
    )
    client_id: str = setting("", "the site's OIDC client id")
    client_secret_file: str = setting(
        "", "file holding the OIDC client secret; empty: a public client (PKCE alone)",
        secret="file",
    )
    oidc_scopes: str = setting("openid profile email", "scopes asked of the OIDC provider")
    secret_key_file: str = setting(
        "", "file holding the key that signs session cookies (required to serve)", secret="file"
    )
    username_claim: str = setting(
        "preferred_username", "the ID token claim that holds the cluster user name"
    )
    username_strip_domain: bool = setting(
        False, "keep the part before '@' of the user name claim (for upn or email)"
    )
    admin_users: list[str] = setting([], "cluster users who see everyone's pages")
    admin_claim: str = setting("", "a claim listing groups or roles; empty: none")
    admin_values: list[str] = setting([], "values of admin_claim that make a user an admin")
    trusted_header: str = setting(
        "", "take the user from this request header set by a proxy (e.g. X-Remote-User); empty: off"
    )
    trusted_proxies: list[str] = setting(
        [], "addresses allowed to set trusted_header, besides loopback"
    )
    session_lifetime_s: float = setting(
        28800.0, "how long a login lasts (seconds)", min=60, max=30 * 86400
    )
    page_size: int = setting(50, "jobs per page in job lists", min=5, max=1000)


@dataclass(frozen=True)
class Config:
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    advice: AdviceSettings = field(default_factory=AdviceSettings)
    energy: EnergySettings = field(default_factory=EnergySettings)
    site: SiteSettings = field(default_factory=SiteSettings)
    letters: LettersSettings = field(default_factory=LettersSettings)
    mail: MailSettings = field(default_factory=MailSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    distributor: DistributorSettings = field(default_factory=DistributorSettings)
    web: WebSettings = field(default_factory=WebSettings)
    # "section.key" -> "file <path>" | "file <path>, as <old.key>" | "env <NAME>"; absent: default
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    file: Path | None = field(default=None, compare=False)

    def items(self) -> list[tuple[str, Any, str]]:
        """Every setting as (dotted key, value, where it came from), in declaration order."""
        rows = []
        for section in _sections():
            values = getattr(self, section.name)
            for f in dataclasses.fields(values):
                key = f"{section.name}.{f.name}"
                rows.append((key, getattr(values, f.name), self.sources.get(key, "default")))
        return rows


def _sections() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config) if f.name not in ("sources", "file")]


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in _sections()}


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is list:
        return f"list of {_TYPE_NAMES[typing.get_args(kind)[0]]}s"
    return _TYPE_NAMES[kind]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class SettingInfo:
    """One row of the settings table: a setting's declaration, without a value."""

    section: str
    key: str
    type: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    secret: str | None = None

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env(self) -> str:
        return env_name(self.section, self.key)

    def bounds(self) -> str:
        """The allowed values in words: "0.5 to 3600", "at least 1", "one of: day, week, month"."""
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        if self.min is not None and self.max is not None:
            return f"{_number(self.min)} to {_number(self.max)}"
        if self.min is not None:
            return f"at least {_number(self.min)}"
        if self.max is not None:
            return f"at most {_number(self.max)}"
        return ""

    def shown(self, value: Any) -> Any:
        """The value as ``config show`` may print it: a secret value is masked once set."""
        return MASK if self.secret == "value" and value else value


def describe() -> list[SettingInfo]:
    """Every setting of every section in declaration order, with its default and metadata."""
    rows = []
    for section, cls in _section_types().items():
        hints = typing.get_type_hints(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            meta = f.metadata
            rows.append(SettingInfo(
                section, f.name, _type_name(hints[f.name]), getattr(defaults, f.name),
                meta["help"], meta.get("min"), meta.get("max"), meta.get("choices"),
                meta.get("secret"),
            ))
    return rows


def _describe(origin: str) -> str:
    return "default" if origin == "default" else origin


def _coerce(key: str, kind: Any, raw: Any, origin: str, meta: Mapping[str, Any]) -> Any:
    """Turn a TOML value or environment string into the declared type, or raise ConfigError."""
    from_env = origin.startswith("env ")
    where = f" (from {_describe(origin)})"
    shown = MASK if meta.get("secret") == "value" else repr(raw)

    def fail(why: str) -> ConfigError:
        return ConfigError(f"{key}: {why}, got {shown}{where}")

    base = kind
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if raw is None or (from_env and raw == ""):
            return None
        base = args[0]

    if base is bool:
        if isinstance(raw, bool):
            value: Any = raw
        elif from_env and str(raw).strip().lower() in ("1", "true", "yes", "on"):
            value = True
        elif from_env and str(raw).strip().lower() in ("0", "false", "no", "off", ""):
            value = False
        else:
            raise fail("must be true or false")
    elif base is int:
        if isinstance(raw, bool):
            raise fail("must be an integer")
        try:
            value = int(raw) if from_env else raw
        except ValueError:
            raise fail("must be an integer") from None
        if not isinstance(value, int):
            raise fail("must be an integer")
    elif base is float:
        if isinstance(raw, bool):
            raise fail("must be a number")
        try:
            value = float(raw) if from_env else raw
        except ValueError:
            raise fail("must be a number") from None
        if not isinstance(value, int | float):
            raise fail("must be a number")
        value = float(value)
        # nan compares false with every bound and inf passes an open one: both would slip
        # through the checks below (an interval of nan seconds spins the sampler).
        if not math.isfinite(value):
            raise fail("must be a finite number")
    elif base is str:
        if not isinstance(raw, str):
            raise fail("must be a string")
        value = raw
    elif typing.get_origin(base) is list:
        if from_env:
            value = [part.strip() for part in str(raw).split(",") if part.strip()]
        elif isinstance(raw, list) and all(isinstance(v, str) for v in raw):
            value = list(raw)
        else:
            raise fail("must be a list of strings")
    else:  # pragma: no cover - a programming error in a section declaration
        raise TypeError(f"{key}: unsupported setting type {kind!r}")

    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if lo is not None and value < lo:
        raise fail(f"must be at least {lo}")
    if hi is not None and value > hi:
        raise fail(f"must be at most {hi}")
    if choices and value not in choices:
        raise fail(f"must be one of {', '.join(choices)}")
    return value


def _unknown(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def default_config_path(environ: Mapping[str, str] | None = None) -> Path | None:
    environ = os.environ if environ is None else environ
    if environ.get("TURINGWATCH_CONFIG"):
        return Path(environ["TURINGWATCH_CONFIG"])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(read_text_file(file))
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {file} cannot be read: {exc.strerror}") from None
    except NotText as exc:
        raise ConfigError(f"config file {file} {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None


# Configuration, rule, address-map and opt-out files are small: a larger one is a mistake
# (or /dev/zero) that must not be read into memory.
TEXT_FILE_LIMIT = 4 << 20


class NotText(ValueError):
    """A configured text file that is not UTF-8; the message says where: "is not UTF-8 text:
    byte 0xe9 at offset 24 (line 2)", to follow the file's name."""


def read_text_file(path: Path) -> str:
    """The text of a small file someone configured: the config, a rule file, an address map,
    an opt-out list. Each reader turns the errors into its own one-line message.

    It is opened without waiting (a FIFO nobody writes to reads as empty instead of hanging
    ``turingwatch run`` before its job starts) and read only if it is a regular file or a pipe
    (``--config <(...)``) of at most 4 MiB.

    Raises:
        OSError: it is missing, unreadable, a directory or a device, or too large.
        NotText: its bytes are not UTF-8.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)  # a pipe's writer may still be writing
        data = file.read(TEXT_FILE_LIMIT + 1)
    if len(data) > TEXT_FILE_LIMIT:
        raise OSError(errno.EFBIG, f"larger than {TEXT_FILE_LIMIT >> 20} MiB", str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise NotText(f"is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                      f"(line {line})") from None


# A value found for a setting: (where it came from, the raw TOML value or string).
Found = dict[str, tuple[str, Any]]


def _prefer_new(found: Found, old: dict[str, tuple[str, Any, str]], notes: list[str],
                spell: typing.Callable[[str], str]) -> None:
    """Add the values given under an old name, unless the same source gave the new name too."""
    for new, (origin, raw, spelled) in old.items():
        if new in found:
            notes.append(f"{spelled} and {spell(new)} are both set: {spell(new)} wins")
        else:
            found[new] = (origin, raw)


def _file_values(data: Mapping[str, Any], file: Path | None, section_types: Mapping[str, type],
                 notes: list[str]) -> Found:
    """The TOML file's values by new dotted key; old spellings are noted and mapped."""
    fields = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in section_types.items()}
    found: Found = {}
    old: dict[str, tuple[str, Any, str]] = {}
    for name, table in data.items():
        if name in section_types:
            target = name
        elif name in RENAMED_SECTIONS:
            target = RENAMED_SECTIONS[name]
            notes.append(f"[{name}] in {file} is now [{target}]")
        elif name in RESERVED_SECTIONS:
            raise ConfigError(f"{file}: [{name}] is not supported by turingwatch {__version__}: "
                              "upgrade, or remove the section")
        else:
            raise ConfigError(
                f"{file}: unknown section [{name}]{_unknown(name, list(section_types))}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: [{name}] must be a table")
        for key, raw in table.items():
            spelled = f"{name}.{key}"
            new = RENAMED_KEYS.get(spelled)
            if new is None:
                if key not in fields[target]:
                    raise ConfigError(f"{file}: unknown setting {spelled}"
                                      f"{_unknown(key, fields[target])}")
                new = f"{target}.{key}"
            elif target == name:  # a key that moved; a renamed section was noted once above
                notes.append(f"{spelled} in {file} is now {new}")
            if new == spelled:
                found[new] = (f"file {file}", raw)
            else:
                old[new] = (f"file {file}, as {spelled}", raw, spelled)
    _prefer_new(found, old, notes, lambda new: new)
    return found


def _env_values(environ: Mapping[str, str], section_types: Mapping[str, type],
                notes: list[str]) -> Found:
    """The environment's values by new dotted key; old variable names are noted and mapped."""
    names = {env_name(section, f.name): f"{section}.{f.name}"
             for section, cls in section_types.items() for f in dataclasses.fields(cls)}
    old_names = {env_name(old, f.name): f"{new}.{f.name}"
                 for old, new in RENAMED_SECTIONS.items()
                 for f in dataclasses.fields(section_types[new])}
    old_names.update({env_name(*old.split(".")): new for old, new in RENAMED_KEYS.items()})

    def spell(dotted: str) -> str:
        return env_name(*dotted.split("."))

    found: Found = {}
    old: dict[str, tuple[str, Any, str]] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in _NOT_SETTINGS:
            continue
        if var in names:
            found[names[var]] = (f"env {var}", environ[var])
        elif var in old_names:
            new = old_names[var]
            notes.append(f"{var} is now {spell(new)}")
            old[new] = (f"env {var}", environ[var], var)
        else:
            # Other parts of turingwatch read variables of their own under the prefix
            # (TURINGWATCH_INTERCEPT_*): only a settings section's prefix is checked.
            section = var[len(ENV_PREFIX):].split("_", 1)[0].lower()
            if section in section_types or section in RENAMED_SECTIONS:
                start = f"{ENV_PREFIX}{section.upper()}_"
                known = [n for n in [*names, *old_names] if n.startswith(start)]
                raise ConfigError(f"unknown setting in environment: {var}{_unknown(var, known)}")
    _prefer_new(found, old, notes, spell)
    return found


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Build the effective configuration from defaults, the TOML file and the environment.

    The environment beats the file whichever spelling each uses; within one source a new
    name beats its old spelling. Old spellings are logged in one warning per load.
    """
    environ = os.environ if environ is None else environ
    file = Path(path) if path is not None else default_config_path(environ)
    data = _read_toml(file) if file is not None else {}

    section_types = _section_types()
    notes: list[str] = []
    in_file = _file_values(data, file, section_types, notes)
    in_env = _env_values(environ, section_types, notes)
    if notes:
        log.warning("configuration: old setting names, still read; rename them "
                    "(docs/settings.md): %s", "; ".join(notes))

    sources: dict[str, str] = {}
    built: dict[str, Any] = {}
    for section, cls in section_types.items():
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            dotted = f"{section}.{f.name}"
            given = in_env.get(dotted) or in_file.get(dotted)
            if given is None:
                continue
            origin, raw = given
            values[f.name] = _coerce(dotted, hints[f.name], raw, origin, f.metadata)
            sources[dotted] = origin
        built[section] = cls(**values)
    return Config(**built, sources=sources, file=file)


def expand_path(value: str) -> Path:
    """A configured path with ~ and environment variables expanded."""
    return Path(os.path.expandvars(os.path.expanduser(value)))


def read_secret(settings: Any, name: str) -> str | None:
    """The secret held in the file that setting ``name`` of a section names; None when unset.

    ``settings`` is a section (``config.mail``) and ``name`` one of its ``secret="file"``
    settings. One trailing newline is stripped. A file that is missing, unreadable, not a
    regular file, empty, or readable by every user is refused with a ConfigError that names
    the setting: a secret others can read is no longer one.
    """
    spec = next((f for f in dataclasses.fields(settings) if f.name == name), None)
    if spec is None or spec.metadata.get("secret") != "file":
        raise TypeError(f"{type(settings).__name__}.{name} is not a secret file setting")
    value = getattr(settings, name)
    if not value:
        return None
    section = {cls: s for s, cls in _section_types().items()}.get(type(settings), "?")
    key, path = f"{section}.{name}", expand_path(value)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{key}: {path} is not a file")
        if st.st_mode & stat.S_IROTH:
            raise ConfigError(f"{key}: {path} can be read by every user; "
                              f"make it private: chmod 600 {path}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{key}: {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{key}: {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None
    secret = text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
    if not secret:
        raise ConfigError(f"{key}: {path} is empty")
    return secret
