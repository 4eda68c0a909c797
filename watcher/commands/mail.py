"""``turingwatch mail``: send each user the letter of a period, exactly once."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from watcher.cli import AppContext, pass_app
from watcher.config import Config, expand_path

if TYPE_CHECKING:
    from watcher.analysis.model import Period
    from watcher.letters.bundle import Bundle

log = logging.getLogger(__name__)


def _bundle(config: Config, period: Period, reanalyze: bool) -> Bundle:
    """The period's bundle; analyze the period and write it first when there is none.

    Mail reads the bundle rather than the store so that users get exactly the letters that
    ``analyze --bundle`` published on the web site, and so that a mail run, which lasts as long
    as the throttle makes it, never holds the store.
    """
    from watcher.letters.bundle import bundle_path, open_bundle, write_bundle

    path = bundle_path(config, period.id)
    if reanalyze or not path.exists():
        from watcher.analysis.engine import analyze_period
        from watcher.store import Store

        log.info("%s period %s", "re-analyzing" if reanalyze else "no bundle yet: analyzing", period.id)
        with Store.site(config) as store:
            reports = analyze_period(store, config, period)
        write_bundle(config, period, reports, progress=None)
        log.info("wrote %s (%d users)", path, len(reports))
    return open_bundle(path)


@click.command()
@click.option("--period", "period_spec", metavar="ID",
              help="2026-W47, 2026-11-22, 2026-11, 'previous' (the default) or 'current'.")
@click.option("--dry-run", is_flag=True,
              help="Write each message as <outbox>/<period>/<user>.eml instead of sending it.")
@click.option("--only", multiple=True, metavar="USER", help="Only this user (repeatable).")
@click.option("--outbox", type=click.Path(file_okay=False),
              help="Folder for --dry-run (default: mail.outbox).")
@click.option("--resend-unconfirmed", is_flag=True,
              help="Also send letters an interrupted run may or may not have sent.")
@click.option("--reanalyze", is_flag=True,
              help="Analyze the period again and rewrite its bundle before mailing.")
@click.option("--allow-unfinished", is_flag=True,
              help="Send the letters of a period that is not over yet.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: when run in a terminal).")
@pass_app
def mail(
    app: AppContext,
    period_spec: str | None,
    dry_run: bool,
    only: tuple[str, ...],
    outbox: str | None,
    resend_unconfirmed: bool,
    reanalyze: bool,
    allow_unfinished: bool,
    progress: bool | None,
) -> None:
    """Send each user the letter of a period, from the period's bundle.

    Every delivered letter is recorded in the sent-ledger: run it again after a crash or an
    SMTP error and it goes on where it stopped, never sending anyone the same letter twice.
    """
    from watcher.analysis.periods import PeriodError, parse_period
    from watcher.mailer.delivery import Deliverer
    from watcher.mailer.ledger import Ledger, ledger_path
    from watcher.mailer.smtp import SmtpSession

    config = app.config
    try:
        period = parse_period(period_spec, config.analysis.period, config.analysis.timezone)
    except PeriodError as exc:
        raise click.BadParameter(str(exc), param_hint="--period") from None
    if period.end > datetime.now(UTC):
        # A letter goes out once: sent now, the complete one would never follow.
        if not (dry_run or allow_unfinished):
            raise click.ClickException(
                f"period {period.id} runs until {period.end:%Y-%m-%d %H:%M %Z}: its letters "
                "would be incomplete, and a sent letter is never sent again "
                "(--allow-unfinished sends them anyway; --dry-run shows them)"
            )
        log.warning("period %s is not over yet; its letters are incomplete", period.id)
    bundle = _bundle(config, period, reanalyze)
    unknown = sorted(set(only) - set(bundle.users))
    if unknown:
        raise click.ClickException(
            f"no letter for {', '.join(unknown)} in {bundle.path} (users with jobs in the "
            "period get one)"
        )
    users = [u for u in bundle.users if not only or u in only]
    if dry_run:
        folder = expand_path(outbox or config.mail.outbox)
        report = Deliverer(config, outbox=folder).deliver(bundle.letters(users))
        log.info("dry run: messages written under %s", folder / period.id)
    else:
        with Ledger(ledger_path(config)) as ledger, SmtpSession(config.mail) as smtp:
            deliverer = Deliverer(config, ledger=ledger, smtp=smtp,
                                  resend_unconfirmed=resend_unconfirmed)
            show = sys.stderr.isatty() if progress is None else progress
            if show:
                with click.progressbar(length=len(users), label=f"mail {period.id}",
                                       file=sys.stderr, show_pos=True) as bar:
                    report = deliverer.deliver(bundle.letters(users),
                                               on_outcome=lambda _o: bar.update(1))
            else:
                report = deliverer.deliver(bundle.letters(users))
    for line in report.summary():
        click.echo(line)
    if not report.ok:
        raise click.exceptions.Exit(1)  # failures are listed above; cron sees the status
