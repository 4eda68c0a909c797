"""The errors turingwatch raises on purpose, under one base class.

Library code raises a subclass of :class:`TuringwatchError` with a message that says what failed
and what to try; ``cli.py`` turns it into one line on stderr and the exit status below, once,
for every command. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class TuringwatchError(Exception):
    """A failure turingwatch knows how to explain: a bad input, a missing service, a refusal."""

    exit_code = 1


class ConfigError(TuringwatchError, ValueError):
    """A configuration value is missing, unknown or out of range."""

    exit_code = 2


class SlurmError(TuringwatchError):
    """A Slurm command could not be run, timed out, or failed."""


class StoreError(TuringwatchError):
    """The store cannot be opened, is busy, or its schema is not one this version understands."""
