"""The ``analyze`` command (a period's findings) and ``rules`` (the rules in force)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import click

from watcher import logsetup
from watcher.cli import AppContext, pass_app, whose_jobs
from watcher.errors import TuringwatchError
from watcher.progress import ProgressBar

log = logging.getLogger(__name__)


@click.command("analyze")
@click.option(
    "--period",
    "period_spec",
    metavar="ID",
    help="2026-W47, 2026-11-22, 2026-11, current or previous "
    "(default: the previous complete period of analysis.period).",
)
@click.option("--user", metavar="NAME", help="Only this user's jobs (default for non-root).")
@click.option("--all-users", is_flag=True, help="Every user's jobs (default for root).")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--bundle", is_flag=True, help="Also write the period bundle for letters and the web."
)
@click.option(
    "--published",
    "published",
    metavar="DIR",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Analyse what a server published in DIR (its server.publish_dir) instead of the site "
    "store; repeat for a site with several servers.",
)
@click.option(
    "-v", "--verbose", is_flag=True,
    help="A line per analysis step on stderr, also when it is no terminal (as turingwatch -v).",
)
@pass_app
def analyze(
    app: AppContext,
    period_spec: str | None,
    user: str | None,
    all_users: bool,
    fmt: str,
    bundle: bool,
    published: tuple[Path, ...],
    verbose: bool,
) -> None:
    """Judge the jobs of a period against the rules and print the findings.

    The findings are stored in the store too; analysing a period again replaces them. With
    --published they are not stored: the analysis runs over the servers' published Parquet,
    read into a private store, and the site store is not opened.
    """
    from watcher.analysis.engine import analyze_period
    from watcher.analysis.model import to_json
    from watcher.analysis.periods import PeriodError, parse_period

    config = app.config
    who = whose_jobs(user, all_users)
    write_bundle = _bundle_writer() if bundle else None
    try:
        period = parse_period(period_spec, config.analysis.period, config.analysis.timezone)
    except PeriodError as exc:
        raise click.BadParameter(str(exc), param_hint="--period") from None

    started = time.monotonic()
    if verbose:
        logsetup.at_least(logging.INFO)
    # On a terminal the steps move one bar; elsewhere (and with -v) they are INFO lines.
    bar = ProgressBar(f"analyze {period.id}")

    def progress(step: str) -> None:
        bar.say(step)
        if verbose or not bar.shown:
            log.info("[%6.1f s] %s", time.monotonic() - started, step)

    with bar, _open_store(config, published, progress) as store:
        reports = analyze_period(store, config, period, user=who, progress=progress)

    findings = [f for report in reports for f in report.findings]
    if fmt == "json":
        click.echo(json.dumps(to_json(findings), indent=2))
    else:
        _print_text(period, reports)
    if write_bundle is not None:
        from watcher.letters.bundle import SkippedLetters

        letters = ProgressBar(f"letters {period.id}", total=len(reports))

        def letter_done(number: int, _total: int) -> None:
            letters.update(number)

        try:
            with letters:
                path = write_bundle(config, period, reports, progress=progress if (
                    verbose or not letters.shown) else None, on_letter=letter_done)
        except SkippedLetters as exc:  # written, without the letters that could not be built
            raise click.ClickException(str(exc)) from exc
        except (TuringwatchError, OSError) as exc:  # the findings are printed and stored already
            raise click.ClickException(f"bundle not written: {exc}") from exc
        log.info("bundle written to %s", path)


def _open_store(config: Any, published: tuple[Path, ...], progress: Any) -> Any:
    """The site store (refused when it is not there), or the servers' publications as one."""
    from watcher.store import Store

    if not published:
        return Store.site(config)
    from watcher.store.published import published_store

    progress(f"reading {len(published)} publication(s)")
    return published_store(
        list(published), memory_limit=config.store.memory_limit, threads=config.store.threads
    )


def _bundle_writer() -> Any:
    """The letters' bundle writer, loaded before the analysis so a missing one fails fast."""
    try:
        from watcher.letters.bundle import write_bundle
    except ImportError as exc:
        raise click.ClickException(
            f"--bundle needs watcher.letters.bundle, which cannot be loaded: {exc}"
        ) from None
    return write_bundle


_TOP = 20  # users the text form lists; --format json has every finding


def _print_text(period: Any, reports: list[Any]) -> None:
    """A ranked summary: the users who left most reserved cores and GPUs idle first."""
    from watcher.analysis.lookup import rank_users

    start = period.start.strftime("%Y-%m-%d %H:%M %Z")
    end = period.end.strftime("%Y-%m-%d %H:%M %Z")
    click.echo(f"period {period.id}: [{start}, {end})")
    if not reports:
        click.echo("no jobs in this period")
        return
    rows = rank_users(reports)
    jobs = sum(r["jobs"] for r in rows)
    findings = sum(sum(r["findings"].values()) for r in rows)
    click.echo(f"{len(rows)} users, {jobs} jobs, {findings} findings;"
               f" {sum(r['idle_core_hours'] for r in rows):,.1f} idle core-hours,"
               f" {sum(r['idle_gpu_hours'] for r in rows):,.1f} idle GPU-hours")
    click.echo("")
    click.echo(f"{'user':<16} {'jobs':>6} {'idle core-h':>12} {'idle GPU-h':>11}"
               f" {'serious':>8} {'medium':>7} {'info':>5}")
    for r in rows[:_TOP]:
        f = r["findings"]
        click.echo(f"{r['user'][:16]:<16} {r['jobs']:>6} {r['idle_core_hours']:>12,.1f}"
                   f" {r['idle_gpu_hours']:>11,.1f} {f['serious']:>8} {f['medium']:>7}"
                   f" {f['info']:>5}")
    if len(rows) > _TOP:
        click.echo(f"… {len(rows) - _TOP} more (--format json for all)")


@click.command("rules")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@pass_app
def rules(app: AppContext, fmt: str) -> None:
    """List the rules in force: severity, thresholds, minimum runtime and exemptions."""
    from watcher.analysis.model import to_json
    from watcher.analysis.rules import load_rules

    ruleset = load_rules(app.config)
    if fmt == "json":
        payload = {
            "source": ruleset.source, "exempt": ruleset.exempt, "rules": to_json(ruleset.rules)
        }
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(f"# rules from {ruleset.source}")
    everyone = {k: v for k, v in ruleset.exempt.items() if v}
    if everyone:
        click.echo(f"# exempt from every rule: {_exempt_text(everyone)}")
    for rule in ruleset.rules:
        state = "" if rule.enabled else "  (disabled)"
        click.echo("")
        click.echo(f"{rule.id}  [{rule.severity}, {rule.section}]  {rule.title}{state}")
        details = [f"min runtime {rule.min_runtime_s:g} s"]
        details += [f"{k} = {v}" for k, v in rule.thresholds.items()]
        click.echo("    " + "; ".join(details))
        if rule.suppressed_by:
            click.echo(f"    not reported together with: {', '.join(rule.suppressed_by)}")
        if rule.exempt:
            click.echo(f"    exempt: {_exempt_text(rule.exempt)}")
        click.echo(f"    {' '.join(rule.cause.split())}")


def _exempt_text(exempt: dict[str, list[str]]) -> str:
    return "; ".join(f"{kind} {', '.join(values)}" for kind, values in exempt.items() if values)
