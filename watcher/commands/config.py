"""``turingwatch config``: inspect the effective configuration, or the table of every setting.

``config show`` prints each setting's value and where it came from; ``config show --defaults``
prints the declaration table instead (default, type, allowed values, help), and
``--defaults --markdown`` renders it as ``docs/settings.md``. Secret values are masked in all
of them.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterable
from typing import Any

import click

from watcher.cli import AppContext, pass_app
from watcher.config import (
    ENV_PREFIX,
    RENAMED_KEYS,
    RENAMED_SECTIONS,
    RESERVED_SECTIONS,
    SYSTEM_CONFIG,
    SettingInfo,
    describe,
)

REGENERATE = "turingwatch config show --defaults --markdown > docs/settings.md"
# A default longer than this does not widen the table: its meaning starts on the next line.
_DEFAULT_WIDTH = 28
# Narrower than this, a meaning column would be unreadable.
_MEANING_WIDTH = 36


@click.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@click.option("--defaults", is_flag=True,
              help="Print every setting's default, type, allowed values and help instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--markdown", is_flag=True,
              help="With --defaults: print the table as Markdown (docs/settings.md).")
@pass_app
def show(app: AppContext, defaults: bool, as_json: bool, markdown: bool) -> None:
    """Print every setting, its value, and where the value came from."""
    if markdown and (as_json or not defaults):
        raise click.UsageError("--markdown goes with --defaults, without --json")
    if defaults:
        infos = describe()
        if as_json:
            click.echo(json.dumps(defaults_json(infos), indent=2))
        elif markdown:
            click.echo(settings_markdown(infos), nl=False)
        else:
            click.echo(defaults_table(infos, shutil.get_terminal_size().columns))
        return
    spec = {info.dotted: info for info in describe()}
    rows = [(key, spec[key].shown(value), source) for key, value, source in app.config.items()]
    if as_json:
        click.echo(json.dumps({k: {"value": v, "source": s} for k, v, s in rows}, indent=2))
        return
    if app.config.file is not None:
        click.echo(f"# config file: {app.config.file}")
    width = max(len(k) for k, _, _ in rows)
    for key, value, source in rows:
        click.echo(f"{key:<{width}}  {json.dumps(value):<40}  {source}")


def _literal(value: Any) -> str:
    """A default as it is written in TOML (JSON's spelling of strings, numbers, lists agrees)."""
    return json.dumps(value)


def _meaning(info: SettingInfo) -> str:
    notes = []
    if info.bounds():
        notes.append(info.bounds())
    if info.secret == "file":
        notes.append("secret: names a file only its owner may read")
    elif info.secret == "value":
        notes.append("secret: never shown")
    return info.help + (f" ({'; '.join(notes)})" if notes else "")


def defaults_json(infos: Iterable[SettingInfo]) -> dict[str, dict[str, Any]]:
    """The settings table as JSON: dotted key -> its declaration."""
    return {
        info.dotted: {
            "section": info.section, "key": info.key, "type": info.type,
            "default": info.shown(info.default), "min": info.min, "max": info.max,
            "choices": list(info.choices) if info.choices else None, "secret": info.secret,
            "env": info.env, "help": info.help,
        }
        for info in infos
    }


def defaults_table(infos: Iterable[SettingInfo], columns: int = 100) -> str:
    """The settings table for a terminal: one block per section, meanings wrapped to fit."""
    infos = list(infos)
    cells = [(i.key, i.type, _literal(i.shown(i.default)), _meaning(i)) for i in infos]
    key_w = max(len("KEY"), *(len(c[0]) for c in cells))
    type_w = max(len("TYPE"), *(len(c[1]) for c in cells))
    default_w = min(_DEFAULT_WIDTH, max(len("DEFAULT"), *(len(c[2]) for c in cells)))
    indent = 2 + key_w + 2 + type_w + 2 + default_w + 2
    beside = columns - indent >= _MEANING_WIDTH
    if not beside:  # a narrow terminal: each meaning goes below its setting
        indent, default_w = 6, 0
    pad = " " * indent
    help_w = max(_MEANING_WIDTH, columns - indent)
    header = f"  {'KEY':<{key_w}}  {'TYPE':<{type_w}}  {'DEFAULT':<{default_w}}"
    lines = [header + "  MEANING" if beside else header.rstrip() + " (meaning below)"]
    section = None
    for info, (key, kind, default, meaning) in zip(infos, cells, strict=True):
        if info.section != section:
            section = info.section
            lines.append(f"[{section}]")
        wrapped = textwrap.wrap(meaning, help_w) or [""]
        head = f"  {key:<{key_w}}  {kind:<{type_w}}  "
        if not beside or len(default) > default_w:
            lines.append((head + default).rstrip())
        else:
            lines.append(head + f"{default:<{default_w}}  " + wrapped.pop(0))
        lines.extend(pad + line for line in wrapped)
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Help text as one Markdown table cell: outside `code`, <user> and svc-* stay literal."""
    parts = text.replace("|", "\\|").split("`")
    for n in range(0, len(parts), 2):  # the even parts are outside code spans
        parts[n] = parts[n].replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")
    return "`".join(parts)


INTRO = f"""\
# Settings

<!-- Generated from the table in watcher/config.py by `{REGENERATE}`;
tests/test_settings_documented.py fails when this file and the table differ. -->

turingwatch reads one TOML file, the first of:

1. `--config FILE` on the command line;
2. the file named by the environment variable `TURINGWATCH_CONFIG`;
3. `{SYSTEM_CONFIG}`, when it exists.

Without one, every setting has its default. Each setting `key` of a section `[section]` can
also be set by the environment variable `{ENV_PREFIX}<SECTION>_<KEY>` in upper case
(`sampler.interval_s` is `{ENV_PREFIX}SAMPLER_INTERVAL_S`). In the environment, booleans
are `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`, and lists are comma-separated.

Precedence, highest first: the environment, the file, the default.

Every value is checked on load: its type, its bounds (numbers must also be finite: `nan` and
`inf` are refused), unknown sections and keys. Errors name the key and where its value came
from. `turingwatch config show` prints the value in force of every setting and its source;
`turingwatch config show --defaults` prints the table below (`--json` for JSON). In defaults,
`~` is the home directory of the user turingwatch runs as.

```toml
[sampler]
interval_s = 10
[store]
path = "/var/lib/turingwatch/turingwatch.duckdb"
```
"""


def _paragraph(text: str, indent: str = "") -> str:
    return textwrap.fill(text, 96, subsequent_indent=indent, break_on_hyphens=False,
                         break_long_words=False)


def settings_markdown(infos: Iterable[SettingInfo]) -> str:
    """docs/settings.md: the intro, one table per section, the secrets and the old names."""
    infos = list(infos)
    out = [INTRO.rstrip("\n")]
    section = None
    for info in infos:
        if info.section != section:
            section = info.section
            out += ["", f"## [{section}]", "", "| key | default | type | meaning |",
                    "|---|---|---|---|"]
        kind = info.type + (f", {info.bounds()}" if info.bounds() else "")
        meaning = _cell(info.help) + (" **(secret)**" if info.secret else "")
        out.append(f"| `{info.key}` | `{_cell(_literal(info.shown(info.default)))}` "
                   f"| {_cell(kind)} | {meaning} |")
    secrets = [i for i in infos if i.secret]
    out += ["", "## Secrets", ""]
    out += [
        _paragraph(f"- `{i.dotted}`: " + (
            "names a file that holds the secret. turingwatch reads it when it needs it, strips "
            "one trailing newline, and refuses a file that is missing, empty, or readable by "
            "every user (`chmod 600 FILE`)."
            if i.secret == "file" else "holds a secret; `config show` prints it masked."
        ), indent="  ")
        for i in secrets
    ]
    out += ["", "## Old names", "",
            _paragraph(
                "Still read, in the file and as environment variables (`TURINGWATCH_SITE_NEWS` "
                "for `site.news`), with one warning per run that names the new spelling. Where "
                "one source (the file, or the environment) gives both, the new one wins."
            ), "",
            "| old | new |", "|---|---|"]
    out += [f"| `[{old}]`, `{ENV_PREFIX}{old.upper()}_*` | `[{new}]`, `{ENV_PREFIX}{new.upper()}_*` |"
            for old, new in RENAMED_SECTIONS.items()]
    out += [f"| `{old}` | `{new}` |" for old, new in RENAMED_KEYS.items()]
    declared = {i.section for i in infos}
    reserved = [name for name in RESERVED_SECTIONS if name not in declared]
    out += ["", "## Reserved sections", "",
            _paragraph(
                "Later versions read " + ", ".join(f"`[{name}]`" for name in reserved)
                + " (the daemons); this version refuses a file that has one, saying so, rather "
                "than ignoring settings it does not know."
            ), ""]
    return "\n".join(out)
