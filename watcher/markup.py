"""The light markdown rule texts may use (``code``, **bold**, [links](https://…)) as safe HTML."""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+|mailto:[^)\s]+)\)")


def light_markdown(text: str) -> Markup:
    """Escape ``text``, then turn its few markdown marks into tags; whitespace is joined."""
    html = str(escape(" ".join(text.split())))
    html = _CODE.sub(r"<code>\1</code>", html)
    html = _BOLD.sub(r"<strong>\1</strong>", html)
    html = _LINK.sub(r'<a href="\2">\1</a>', html)
    return Markup(html)


def plain(text: str) -> str:
    """The same text for the plain-text letter: links as 'text <url>', marks dropped."""
    text = " ".join(text.split())
    text = _LINK.sub(r"\1 <\2>", text)
    return _BOLD.sub(r"\1", text)
