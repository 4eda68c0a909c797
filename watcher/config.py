"""The one typed configuration object.

Values come, lowest precedence first, from the defaults below, a TOML file (``--config``, else
``$TURINGWATCH_CONFIG``, else ``/etc/turingwatch/turingwatch.toml`` when it exists) and
``TURINGWATCH_<SECTION>_<KEY>`` environment variables. Every value is checked against its
declared type and bounds; errors name the key and where its value came from.

A section is a frozen dataclass; a field's ``metadata`` carries its help text and bounds
(see :func:`setting`). Adding a setting is adding one field.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watcher.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/turingwatch/turingwatch.toml")
ENV_PREFIX = "TURINGWATCH_"
# Variables under the prefix that are not settings (read by other parts of the system).
_NOT_SETTINGS = {"TURINGWATCH_CONFIG"}


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """Declare a setting: its default, one line of help, and optional bounds."""
    meta = {"help": help, "min": min, "max": max, "choices": choices}
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
        "~/.local/share/turingwatch/turingwatch.duckdb",
        "the DuckDB store used by import-accounting, analyze and mail",
    )
    memory_limit: str = setting("", "DuckDB memory_limit (e.g. '4GB'); empty: DuckDB's default")
    threads: int = setting(0, "DuckDB worker threads; 0: DuckDB's default", min=0, max=1024)


@dataclass(frozen=True)
class SlurmSettings:
    sacct: str = setting("sacct", "the sacct command")
    scontrol: str = setting("scontrol", "the scontrol command")
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
    result_dir: str = setting("analysis_result", "where period bundles are written")


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
    news: str = setting(
        "", "news from the admins, shown in every letter; blank lines separate paragraphs"
    )
    job_url: str = setting(
        "",
        "link behind a job id in letters, with {job_id}, {cluster}, {user} and {web_url}, "
        "e.g. '{web_url}/jobs/{job_id}'; empty: job ids are not links",
    )
    letter_url: str = setting(
        "",
        "where a letter can be read on the web site, with {period}, {user} and {web_url}; "
        "empty: no 'read it on the web' link",
    )
    templates_dir: str = setting(
        "", "directory of letter templates that override the shipped ones (same names)"
    )
    letter_max_rows: int = setting(
        15, "rows shown per table in a letter; the rest are counted", min=1, max=1000
    )
    letter_charts: bool = setting(True, "draw charts of the worst jobs in letters")


@dataclass(frozen=True)
class MailSettings:
    smtp_host: str = setting("localhost", "SMTP server")
    smtp_port: int = setting(25, "SMTP port", min=1, max=65535)
    security: str = setting(
        "none", "transport security", choices=("none", "starttls", "ssl")
    )
    username: str = setting("", "SMTP login; empty: no login")
    password_file: str = setting("", "file holding the SMTP password")
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
    subject: str = setting(
        "{site}: your usage summary for {period}",
        "letter subject, with {site}, {period}, {user} and {problems} (number of problems)",
    )
    all_good: str = setting(
        "letter",
        "what users with no problem found get: a short 'all good' letter, or none",
        choices=("letter", "none"),
    )
    timeout_s: float = setting(30.0, "SMTP connection and command timeout", min=1, max=600)
    retry_attempts: int = setting(
        3, "tries per letter within one run on temporary SMTP errors", min=1, max=20
    )
    retry_backoff_s: float = setting(
        2.0, "wait before the first retry; doubled before each next one", min=0, max=600
    )
    outbox: str = setting("outbox", "where --dry-run writes .eml files")
    ledger: str = setting(
        "", "sent-ledger (SQLite) file; empty: mail-ledger.sqlite3 next to the store"
    )


@dataclass(frozen=True)
class Config:
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    energy: EnergySettings = field(default_factory=EnergySettings)
    site: SiteSettings = field(default_factory=SiteSettings)
    mail: MailSettings = field(default_factory=MailSettings)
    # "section.key" -> "default" | "file <path>" | "env <NAME>"
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


def _describe(origin: str) -> str:
    return "default" if origin == "default" else origin


def _coerce(key: str, kind: Any, raw: Any, origin: str, meta: Mapping[str, Any]) -> Any:
    """Turn a TOML value or environment string into the declared type, or raise ConfigError."""
    from_env = origin.startswith("env ")
    where = f" (from {_describe(origin)})"

    def fail(why: str) -> ConfigError:
        return ConfigError(f"{key}: {why}, got {raw!r}{where}")

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


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Build the effective configuration from defaults, the TOML file and the environment."""
    environ = os.environ if environ is None else environ
    file = Path(path) if path is not None else default_config_path(environ)
    data: dict[str, Any] = {}
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"config file {file} cannot be read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None

    section_types = _section_types()
    unknown_sections = set(data) - set(section_types)
    if unknown_sections:
        name = sorted(unknown_sections)[0]
        raise ConfigError(
            f"{file}: unknown section [{name}]{_unknown(name, list(section_types))}"
        )

    sources: dict[str, str] = {}
    built: dict[str, Any] = {}
    env_known: set[str] = set()
    for section, cls in section_types.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: [{section}] must be a table")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in table:
            if key not in fields:
                raise ConfigError(
                    f"{file}: unknown setting {section}.{key}{_unknown(key, list(fields))}"
                )
        values: dict[str, Any] = {}
        for name, f in fields.items():
            dotted = f"{section}.{name}"
            var = env_name(section, name)
            env_known.add(var)
            if var in environ:
                origin, raw = f"env {var}", environ[var]
            elif name in table:
                origin, raw = f"file {file}", table[name]
            else:
                continue
            values[name] = _coerce(dotted, hints[name], raw, origin, f.metadata)
            sources[dotted] = origin
        built[section] = cls(**values)

    for var in environ:
        if var.startswith(ENV_PREFIX) and var not in env_known and var not in _NOT_SETTINGS:
            section = var[len(ENV_PREFIX) :].split("_", 1)[0].lower()
            if section in section_types:
                known = [env_name(section, f.name) for f in dataclasses.fields(section_types[section])]
                raise ConfigError(f"unknown setting in environment: {var}{_unknown(var, known)}")
    return Config(**built, sources=sources, file=file)


def expand_path(value: str) -> Path:
    """A configured path with ~ and environment variables expanded."""
    return Path(os.path.expandvars(os.path.expanduser(value)))
