"""Every letter of the synthetic week fits an inbox.

Gmail clips a message's HTML at about 102 KB and hides the rest behind "[Message clipped]",
footer and contact address included; a terminal mail program wraps lines longer than its
window in the middle of a table row. So for each of the week's 500 users (bench/synthetic_week.py
at scale 0.05, analyzed and bundled as `analyze --bundle` does): the HTML part is under
100,000 bytes and ends with the footer that holds the contact address, the text part has no
line over 78 columns, and no row of a table names two rules that contradict each other.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

from watcher.analysis.engine import analyze_period
from watcher.analysis.periods import parse_period
from watcher.analysis.rules import load_rules
from watcher.config import load_config
from watcher.letters.bundle import open_bundle, write_bundle
from watcher.letters.tables import CONTRADICTIONS
from watcher.letters.view import build_view
from watcher.letters.waste import standings
from watcher.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from synthetic_week import generate

HTML_MAX = 100_000
TEXT_WIDTH = 78
CONTACT = "HPC support <hpc-support@example.org>"


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    folder = tmp_path_factory.mktemp("week")
    config = load_config(None, environ={
        "TURINGWATCH_ANALYSIS_RESULT_DIR": str(folder / "analysis_result"),
        "TURINGWATCH_SITE_NAME": "Synthetic cluster",
        "TURINGWATCH_SITE_CONTACT": CONTACT,
        "TURINGWATCH_SITE_WEB_URL": "https://hpc.example.org",
        "TURINGWATCH_SITE_JOB_URL": "{web_url}/jobs/{cluster}/{job_id}",
        "TURINGWATCH_LETTERS_URL": "{web_url}/letters/{period}/{user}",
        "TURINGWATCH_LETTERS_NEWS": "The new A100 partition is open.",
    })
    generate(folder / "week.duckdb", scale=0.05, progress=False)
    period = parse_period("2026-W47", "week", "UTC")
    with Store(folder / "week.duckdb") as store:
        reports = analyze_period(store, config, period)
    rules = {r.id: r for r in load_rules(config).rules}
    letters = list(open_bundle(write_bundle(config, period, reports, rules)).letters())
    return config, rules, reports, letters


def test_the_week_has_a_letter_for_every_user(week):
    _, _, reports, letters = week
    assert len(reports) == 500
    assert sorted(letter.user for letter in letters) == sorted(r.user for r in reports)


def test_every_html_part_is_under_100_kb_with_its_footer(week):
    _, _, _, letters = week
    sizes = {letter.user: len(letter.html.encode()) for letter in letters}
    too_big = {user: size for user, size in sizes.items() if size >= HTML_MAX}
    assert too_big == {}
    for letter in letters:
        footer = letter.html[letter.html.rindex('class="footer"'):]
        assert "mailto:hpc-support@example.org" in footer, letter.user
        assert f"Analysis ID: <code>{letter.analysis_id}</code>" in footer
    print(f"HTML min {min(sizes.values()):,} median {statistics.median(sizes.values()):,.0f} "
          f"max {max(sizes.values()):,} bytes")


def test_every_text_part_is_within_78_columns(week):
    _, _, _, letters = week
    wide = {}
    for letter in letters:
        for number, line in enumerate(letter.text.splitlines(), 1):
            if len(line) > TEXT_WIDTH:
                wide.setdefault(letter.user, (number, line))
    assert wide == {}
    assert all("hpc-support@example.org" in letter.text for letter in letters)


def test_no_row_names_two_contradicting_rules(week):
    config, rules, reports, _ = week
    ranks = standings(reports)
    for report in reports:
        view = build_view(report, rules, config, [], ranks[report.user])
        for section in view.sections:
            for table in section.tables:
                for row in table.rows:
                    shown = {b.rule_id for cell in row for b in cell.badges}
                    for loser, winner in CONTRADICTIONS:
                        assert not {loser, winner} <= shown, (report.user, table.kind, shown)


def test_tables_are_short_and_worst_first_by_waste(week):
    config, rules, reports, _ = week
    heavy = max(reports, key=lambda r: r.totals.get("core_hours") or 0)
    view = build_view(heavy, rules, config, [])
    resources = next(s for s in view.sections if s.id == "resources")
    for table in resources.tables:
        assert len(table.rows) <= config.letters.max_rows
        waste = [c.id for c in table.columns].index("idle_core_hours")
        idle = [float(row[waste].text.replace(",", "")) for row in table.rows]
        assert idle == sorted(idle, reverse=True)
        if table.hidden_rows:
            assert table.more_command.startswith(f"turingwatch jobs --user {heavy.user} ")
            assert table.more_href == f"https://hpc.example.org/letters/2026-W47/{heavy.user}"


def test_ranks_and_idle_nodes_say_where_a_user_stands(week):
    _, _, reports, letters = week
    ranks = standings(reports)
    first = min(ranks, key=lambda user: ranks[user].rank)
    assert ranks[first].rank == 1 and ranks[first].users == 500
    letter = next(x for x in letters if x.user == first)
    said = " ".join(letter.text.split())
    assert "Of the 500 users of this week, your jobs left the most core-hours idle." in said
    assert "idle 64-core node" in letter.html or "one 64-core node left idle" in letter.html
