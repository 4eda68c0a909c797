"""docs/settings.md documents every setting: it is the rendering of the table in watcher/config.py."""

from __future__ import annotations

import re

import pytest

from watcher.commands.config import REGENERATE, settings_markdown
from watcher.config import describe

REGENERATE_HINT = f"docs/settings.md is out of date; regenerate it: {REGENERATE}"


@pytest.fixture(scope="module")
def settings_md(repo_root) -> str:
    return (repo_root / "docs" / "settings.md").read_text(encoding="utf-8")


def section_blocks(markdown: str) -> dict[str, str]:
    """The text under each "## [section]" heading, up to the next heading."""
    parts = re.split(r"^## \[(\w+)\]$", markdown, flags=re.MULTILINE)
    return {parts[n]: parts[n + 1].split("\n## ", 1)[0] for n in range(1, len(parts), 2)}


def test_every_setting_has_a_row_in_its_section(settings_md):
    blocks = section_blocks(settings_md)
    missing = [i.dotted for i in describe()
               if not re.search(rf"^\| `{i.key}` \|", blocks.get(i.section, ""), re.MULTILINE)]
    assert not missing, f"settings without a row in docs/settings.md: {missing}; {REGENERATE_HINT}"


def test_every_secret_is_listed_as_one(settings_md):
    secrets = settings_md.split("## Secrets", 1)[1].split("\n## ", 1)[0]
    for info in describe():
        if info.secret:
            assert f"- `{info.dotted}`:" in secrets, info.dotted


def test_the_file_is_the_rendering_of_the_table(settings_md):
    assert settings_md == settings_markdown(describe()), REGENERATE_HINT


def test_the_readme_links_to_it(repo_root):
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    configuration = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert "(docs/settings.md)" in configuration
