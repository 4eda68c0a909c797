"""A progress bar on stderr for long work: import windows, analysis steps, letters, mail.

Shown only where someone watches: stderr is a terminal (not ``TERM=dumb``) and ``--quiet`` was
not given. Anywhere else (a pipe, cron, the journal, a job's output file) it draws nothing, and
the commands log their INFO lines as before, so logs keep one line per event and no carriage
returns.

The bar is one line, redrawn in place at most ten times a second (and always at the end):
``label  [#####.....]  12/40  3.1/s  ETA 9 s  note``; without a total it counts and says the
rate. While it is drawn, a log record that reaches a handler first clears the bar's line, so a
warning is never glued to the bar; the bar is redrawn at its next update. ``close()`` leaves
the last state on its own line.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from types import TracebackType
from typing import IO

from watcher.units import duration

_REDRAW_S = 0.1
_BAR = 20


def quiet_requested() -> bool:
    """Whether ``--quiet`` was given: cli.py then sets turingwatch's loggers to errors only."""
    return logging.getLogger("watcher").getEffectiveLevel() >= logging.ERROR


def wanted(stream: IO[str] | None = None, *, quiet: bool | None = None) -> bool:
    """Whether a bar on ``stream`` (default stderr) would be seen: a terminal, and not quiet."""
    stream = sys.stderr if stream is None else stream
    if quiet if quiet is not None else quiet_requested():
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):  # closed, or no file at all: nobody sees it
        return False


class _ClearLine(logging.Filter):
    """Clears the bar's line before a log record is written under it (a filter runs just
    before its handler emits, and only for records the handler's level lets through)."""

    def __init__(self, bar: ProgressBar) -> None:
        super().__init__()
        self.bar = bar

    def filter(self, record: logging.LogRecord) -> bool:
        self.bar.clear()
        return True


class ProgressBar:
    """One bar; a no-op where :func:`wanted` says nobody would see it (``shown`` is False)."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: IO[str] | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.shown = wanted(self.stream) if enabled is None else enabled
        self.done = 0
        self.note = ""
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._on_screen = False
        self._filter = _ClearLine(self)
        if self.shown:
            for handler in logging.getLogger().handlers:
                handler.addFilter(self._filter)

    # -- feeding it --------------------------------------------------------------------------
    def advance(self, step: int = 1, note: str | None = None) -> None:
        """``step`` more done; ``note`` says what is being done now."""
        self.update(self.done + step, note)

    def update(self, done: int | None = None, note: str | None = None, total: int | None = None) -> None:
        """Set how much is done (and the total, when it becomes known) and redraw."""
        if done is not None:
            self.done = done
        if total is not None:
            self.total = total
        if note is not None:
            self.note = note
        if not self.shown:
            return
        now = time.monotonic()
        if now - self._drawn_at >= _REDRAW_S or (self.total is not None and self.done >= self.total):
            self._draw(now)

    def say(self, note: str) -> None:
        """A step with a name (the analysis engine's ``progress`` callback): one more done."""
        self.advance(1, note)

    # -- drawing -----------------------------------------------------------------------------
    def line(self, now: float | None = None) -> str:
        """The bar as text, fitted to the terminal's width."""
        elapsed = max((time.monotonic() if now is None else now) - self._started, 1e-9)
        rate = self.done / elapsed
        parts = [self.label]
        if self.total:
            filled = min(_BAR, round(_BAR * self.done / self.total))
            parts.append("[" + "#" * filled + "." * (_BAR - filled) + "]")
            parts.append(f"{self.done}/{self.total}")
        else:
            parts.append(str(self.done))
        if self.done:
            parts.append(f"{rate:.1f}/s" if rate < 100 else f"{rate:,.0f}/s")
        if self.total and self.done and self.done < self.total:
            parts.append("ETA " + duration((self.total - self.done) / rate).replace("\u00a0", " "))
        if self.note:
            parts.append(self.note)
        text = "  ".join(parts)
        width = _width(self.stream)
        return text if len(text) < width else text[: max(width - 2, 10)] + "…"

    def _draw(self, now: float) -> None:
        self._write("\r\x1b[K" + self.line(now))
        self._drawn_at = now
        self._on_screen = True

    def clear(self) -> None:
        """Take the bar off its line (a log line is about to be written there)."""
        if self._on_screen:
            self._write("\r\x1b[K")
            self._on_screen = False
            self._drawn_at = 0.0  # redraw at the next update, whatever the pace

    def close(self) -> None:
        """Leave the last state on its own line; stop clearing for log records."""
        if not self.shown:
            return
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self._filter)
        if self.done or self._on_screen:
            self._write("\r\x1b[K" + self.line() + "\n")
        self._on_screen = False
        self.shown = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: the work goes on without a bar
            self.shown = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _width(stream: IO[str]) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size().columns
