"""Period letters: from a user's analysis report to an HTML + text letter, a MIME message,
and the period bundle the web site reads."""

from watcher.letters.render import RenderedLetter, render_letter
from watcher.letters.view import LetterError

__all__ = ["LetterError", "RenderedLetter", "render_letter"]
