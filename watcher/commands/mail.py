"""``turingwatch mail``: send each user the letter of a period, exactly once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from watcher.cli import AppContext, pass_app
from watcher.config import Config, expand_path
from watcher.progress import ProgressBar

if TYPE_CHECKING:
    from watcher.analysis.model import Period
    from watcher.letters.bundle import Bundle
    from watcher.mailer.ledger import Ledger

log = logging.getLogger(__name__)


def _bundle(config: Config, period: Period, reanalyze: bool) -> Bundle:
    """The period's bundle; analyze the period and write it first when there is none.

    Mail reads the bundle rather than the store so that users get exactly the letters that
    ``analyze --bundle`` published on the web site, and so that a mail run, which lasts as long
    as the throttle makes it, never holds the store.
    """
    from watcher.letters.bundle import SkippedLetters, bundle_path, open_bundle, write_bundle

    path = bundle_path(config, period.id)
    if reanalyze or not path.exists():
        from watcher.analysis.engine import analyze_period
        from watcher.store import Store

        log.info("%s period %s", "re-analyzing" if reanalyze else "no bundle yet: analyzing", period.id)
        with ProgressBar(f"analyze {period.id}") as bar, Store.site(config) as store:
            reports = analyze_period(store, config, period, progress=bar.say)
        try:
            with ProgressBar(f"letters {period.id}", total=len(reports)) as letters:
                write_bundle(config, period, reports, progress=None,
                             on_letter=lambda done, _total: letters.update(done))
        except SkippedLetters as exc:  # the others' letters are in it; the summary lists these
            log.error("%s", exc)
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
@click.option("--resend", multiple=True, metavar="USER",
              help="Send this user's unconfirmed letter again: it is not in the mail server's "
                   "log (repeatable).")
@click.option("--mark-sent", multiple=True, metavar="USER",
              help="Record this user's unconfirmed letter as sent: it is in the mail server's "
                   "log. Sends nothing (repeatable).")
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
    resend: tuple[str, ...],
    mark_sent: tuple[str, ...],
    reanalyze: bool,
    allow_unfinished: bool,
    progress: bool | None,
) -> None:
    """Send each user the letter of a period, from the period's bundle.

    Every delivered letter is recorded in the sent-ledger: run it again after a crash or an
    SMTP error and it goes on where it stopped, never sending anyone the same letter twice.
    A letter a crash left unconfirmed makes every run exit 1 until --mark-sent or --resend
    settles it (docs/letters.md, "Exactly once").
    """
    from watcher.analysis.periods import PeriodError, parse_period
    from watcher.mailer.delivery import FAILED, Deliverer, Outcome
    from watcher.mailer.ledger import Ledger, ledger_path
    from watcher.mailer.smtp import SmtpSession

    config = app.config
    try:
        period = parse_period(period_spec, config.analysis.period, config.analysis.timezone)
    except PeriodError as exc:
        raise click.BadParameter(str(exc), param_hint="--period") from None
    if mark_sent:
        if dry_run or resend or resend_unconfirmed or only or reanalyze:
            raise click.UsageError("--mark-sent only records letters as sent; run mail again "
                                   "without it to send the others")
        _mark_sent(config, period.id, mark_sent)
        return
    if dry_run and (resend or resend_unconfirmed):
        raise click.UsageError("--dry-run sends nothing: --resend needs a real run")
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
    where = f"in {bundle.path} (users with jobs in the period get one)"
    chosen, resent = _named(bundle.users, only, where), _named(bundle.users, resend, where)
    users = [u for u in bundle.users if not only or u in chosen]
    missing = [Outcome(u, FAILED, f"no letter in the bundle ({bundle.skipped[u]}); fix it, then "
                       f"'turingwatch mail --period {period.id} --reanalyze'", period.id)
               for u in users if u in bundle.skipped]
    if dry_run:
        folder = expand_path(outbox or config.mail.outbox)
        report = Deliverer(config, outbox=folder).deliver(bundle.letters(users))
        log.info("dry run: messages written under %s", folder / period.id)
    else:
        with Ledger(ledger_path(config)) as ledger, SmtpSession(config.mail) as smtp:
            _check_resend(ledger, period.id, resent)
            deliverer = Deliverer(config, ledger=ledger, smtp=smtp,
                                  resend_unconfirmed=resend_unconfirmed, resend=resent)
            # --progress/--no-progress, else a bar where stderr is a terminal and not --quiet
            with ProgressBar(f"mail {period.id}", total=len(users), enabled=progress) as bar:
                report = deliverer.deliver(bundle.letters(users),
                                           on_outcome=lambda o: bar.advance(1, o.user))
    report.outcomes.extend(missing)
    for line in report.summary():
        click.echo(line)
    if not report.ok:
        raise click.exceptions.Exit(1)  # failures are listed above; cron sees the status


def _named(users: list[str], names: tuple[str, ...], where: str) -> set[str]:
    """The bundle's users that ``names`` give, each as the login or as its user id (what
    the summary shows for a name that is no plain login)."""
    from watcher.letters.view import user_id

    by_id = {user_id(u): u for u in users}
    found = {n: n if n in users else by_id.get(n) for n in names}
    unknown = sorted(n for n, u in found.items() if u is None)
    if unknown:
        raise click.ClickException(f"no letter for {', '.join(user_id(n) for n in unknown)} "
                                   f"{where}")
    return {u for u in found.values() if u is not None}


def _check_resend(ledger: Ledger, period_id: str, users: set[str]) -> None:
    """--resend is for unconfirmed letters: a letter the server confirmed never goes twice."""
    from watcher.letters.view import user_id
    from watcher.mailer.ledger import SENT

    for user in sorted(users):
        entry = ledger.entry(period_id, user)
        if entry is not None and entry.state == SENT:
            raise click.ClickException(
                f"the letter of {user_id(user)} for {period_id} was sent on {entry.sent_at} and "
                "confirmed by the server; --resend only sends unconfirmed letters again"
            )


def _mark_sent(config: Config, period_id: str, names: tuple[str, ...]) -> None:
    """Record unconfirmed letters as sent, once an admin found them in the server's log."""
    from watcher.letters.view import user_id
    from watcher.mailer.ledger import SENDING, SENT, Ledger, ledger_path

    with Ledger(ledger_path(config)) as ledger:
        entries = {e.user: e for e in ledger.entries(period_id)}
        users = _named(list(entries), names, f"of {period_id} in the sent-ledger {ledger.path}")
        for user in sorted(users):
            entry = entries[user]
            if entry.state not in (SENDING, SENT):
                raise click.ClickException(
                    f"the letter of {user_id(user)} for {period_id} is not unconfirmed but "
                    f"{entry.state} ({entry.last_error}); the next run sends it"
                )
        for user in sorted(users):
            entry = entries[user]
            if entry.state == SENT:
                click.echo(f"{user_id(user)}: already sent on {entry.sent_at}")
                continue
            ledger.resolve_sent(period_id, user, f"marked sent with --mark-sent; unconfirmed "
                                                 f"since {entry.updated_at}")
            click.echo(f"{user_id(user)}: marked as sent")
        left = ledger.unconfirmed()
    if left:
        click.echo(f"still unconfirmed: {len(left)} ("
                   + ", ".join(f"{user_id(e.user)} of {e.period}" for e in left) + ")")
