"""The period letter: its words and numbers, its links, its images and its plain-text twin."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser

import pytest

from watcher.analysis.model import Finding, Table
from watcher.analysis.rules import load_rules
from watcher.config import load_config
from watcher.letters import LetterError, render_letter
from watcher.letters.charts import cores_chart, gpu_chart
from watcher.letters.digest import pick_advice
from watcher.letters.sample import sample_report
from watcher.letters.view import build_view, letter_columns, period_label
from watcher.markup import light_markdown, plain
from watcher.templating import text_table
from watcher.units import by_name, duration, number, percent, size

SITE_ENV = {
    "TURINGWATCH_SITE_NAME": "Turing cluster",
    "TURINGWATCH_SITE_CONTACT": "HPC support <hpc-support@example.org>",
    "TURINGWATCH_SITE_FEEDBACK_URL": "https://example.org/feedback?form=letters",
    "TURINGWATCH_LETTERS_NEWS": "The A100 partition is open: `-p a100`.\n\nMaintenance on 3 Dec.",
    "TURINGWATCH_SITE_WEB_URL": "https://hpc.example.org/usage/",
    "TURINGWATCH_SITE_JOB_URL": "{web_url}/jobs/{cluster}/{job_id}",
    "TURINGWATCH_LETTERS_URL": "{web_url}/letters/{period}/{user}",
}


@pytest.fixture(scope="module")
def config():
    return load_config(None, environ=SITE_ENV)


@pytest.fixture(scope="module")
def rules(config):
    return {r.id: r for r in load_rules(config).rules}


@pytest.fixture(scope="module")
def letter(config, rules):
    return render_letter(sample_report("alice"), rules, config)


class Links(HTMLParser):
    """Collects a letter's links, anchors, badges, images and visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.anchors: set[str] = set()
        self.badges: list[tuple[str, str]] = []     # (href, severity) of linked badges
        self.images: list[dict[str, str | None]] = []
        self.words: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._in_style = tag in ("style", "title")
        for key in ("id", "name"):
            if a.get(key):
                self.anchors.add(a[key])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
            classes = (a.get("class") or "").split()
            if "badge" in classes:
                severity = next(c for c in classes if c.startswith("badge-"))
                self.badges.append((a["href"], severity.removeprefix("badge-")))
        if tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if not self._in_style:
            self.words.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.words).split())


def parse(html: str) -> Links:
    links = Links()
    links.feed(html)
    return links


def table_of(view, section: str, kind: str):
    shown = next(s for s in view.sections if s.id == section)
    return next(t for t in shown.tables if t.kind == kind)


# -- formatting ------------------------------------------------------------------------------


def test_numbers_read_like_a_person_wrote_them():
    assert number(4096) == "4,096"
    assert number(1234.56) == "1,235"
    assert number(12.34) == "12.3"
    assert number(0.4213) == "0.42"
    assert number(None) == "–"
    assert percent(9.3) == "9.3%"
    assert percent(42.4) == "42%"
    assert percent(0.0) == "0%"
    assert size(3 * 2**30) == "3.0\u00a0GiB"
    assert duration(45) == "45\u00a0s"
    assert duration(3 * 3600 + 5 * 60) == "3\u00a0h 05\u00a0min"
    assert duration(2 * 86400 + 4 * 3600) == "2\u00a0d 4\u00a0h"


def test_values_are_formatted_by_the_unit_in_their_name():
    assert by_name("elapsed_s", 5400) == "1\u00a0h 30\u00a0min"
    assert by_name("memory_fraction", 0.087) == "8.7%"
    assert by_name("cpu_efficiency", 0.5) == "50%"
    assert by_name("avg_util_pct", 97.0) == "97%"
    assert by_name("peak_rss_bytes", 2**30) == "1.0\u00a0GiB"
    assert by_name("energy_wh", 1250.0) == "1,250\u00a0Wh"
    assert by_name("job_id", 4100123) == "4100123"  # an id, not a quantity
    assert by_name("cores", None) == "–"


def test_light_markdown_is_escaped_first():
    html = light_markdown("Use `--time` <b>now</b>, see [docs](https://x.org/a?b=1&c=2).")
    assert "<code>--time</code>" in html
    assert "&lt;b&gt;now&lt;/b&gt;" in html
    assert '<a href="https://x.org/a?b=1&amp;c=2">docs</a>' in html
    assert plain("see [docs](https://x.org) **now**") == "see docs <https://x.org> now"


# -- what the letter says --------------------------------------------------------------------


def test_tldr_puts_the_most_severe_and_widespread_problems_first(config, rules):
    report = sample_report("alice")
    advice = pick_advice(report, rules)
    assert len(advice) == 3
    order = {"serious": 0, "medium": 1, "info": 2}
    keys = [(order[a.rule.severity], -a.jobs) for a in advice]
    assert keys == sorted(keys)
    # One change per resource: cores, GPUs, memory.
    assert [a.rule.id for a in advice] == ["cpu_underuse", "gpu_never_used", "memory_underuse"]
    top = advice[0]
    assert top.rule.id == "cpu_underuse"
    flagged = [j for j in report.jobs
               if any(f.rule == "cpu_underuse" and f.job_id == j["job_id"]
                      for f in report.findings)]
    used = sum(j["busy_core_hours"] for j in flagged)
    reserved = sum(j["core_hours"] for j in flagged)
    assert top.jobs == len(flagged)
    assert f"of the {number(reserved)} core-hours they reserved" in top.evidence
    assert f"({percent(100 * used / reserved)})" in top.evidence


def test_the_evidence_comes_from_the_resource_the_rule_declares(config, rules):
    # The id says nothing about time; the declared resource does.
    report = sample_report("alice", jobs=2)
    job = report.jobs[0]
    report.findings[:] = [Finding("short_jobs", "info", "alice", job["job_id"], None, "turing",
                                  metrics={"job_key": job["job_key"]})]
    [plain] = pick_advice(report, rules)
    assert plain.evidence is None      # workflow: no used-versus-reserved pair
    timed = {**rules, "short_jobs": dataclasses.replace(rules["short_jobs"], resource="time")}
    [advice] = pick_advice(report, timed)
    assert advice.evidence.startswith("Together they ran for ")


def test_headline_gives_the_share_of_reserved_core_hours(config, rules):
    report = sample_report("alice")
    view = build_view(report, rules, config, charts=[])
    text = " ".join(view.headline)
    flagged = len({f.job_id for f in report.findings})
    assert f"You ran {len(report.jobs)} jobs in this period; checks found something to " \
           f"improve in {flagged} of them." in text
    share = 100 * report.totals["busy_core_hours"] / report.totals["core_hours"]
    assert f"core-hours they reserved ({percent(share)})" in text


def test_subject_and_analysis_id(letter):
    assert letter.subject == "Turing cluster: your usage summary for 2026-W47"
    assert letter.analysis_id == "2026-W47:alice"
    assert "Analysis ID: 2026-W47:alice" in parse(letter.html).text


def test_a_bad_subject_template_names_the_setting(rules):
    config = load_config(None, environ={"TURINGWATCH_LETTERS_SUBJECT": "{site} {week}"})
    with pytest.raises(LetterError, match=r"\{week\}"):
        render_letter(sample_report("alice"), rules, config)


def test_every_internal_link_has_its_anchor(letter):
    links = parse(letter.html)
    internal = [h[1:] for h in links.hrefs if h.startswith("#")]
    assert "top" in internal and any(h.startswith("problem-") for h in internal)
    missing = sorted(set(internal) - links.anchors)
    assert missing == []


def test_badges_link_to_the_explanation_of_their_problem(letter, rules):
    links = parse(letter.html)
    assert len(links.badges) > 10
    for href, severity in links.badges:
        rule_id = href.removeprefix("#problem-").replace("-", "_")
        assert rules[rule_id].severity == severity
        assert href[1:] in links.anchors
    explained = re.findall(r'name="(problem-[a-z0-9-]+)"', letter.html)
    assert len(explained) == len(set(explained))  # each problem explained once


def test_explanations_carry_cause_impact_and_solution(letter, rules):
    text = parse(letter.html).text
    rule = rules["cpu_underuse"]
    for part in (rule.cause, rule.impact, rule.solution):
        assert " ".join(part.replace("`", "").split()) in text


def test_styles_are_classes_in_one_style_block_and_layout_is_tables_only(letter):
    head, body = letter.html.split("<body", 1)
    assert head.count("<style>") == 1 and "<style" not in body
    assert "@media (prefers-color-scheme: dark)" in head and ".badge-serious {" in head
    assert 'class="badge badge-serious"' in body
    # Only the few styles that must survive a client that drops <style> are inline.
    assert body.count(' style="') <= 10 + body.count('class="bad"')
    assert "display: flex" not in letter.html and "display: grid" not in letter.html
    assert letter.html.index('<meta charset="utf-8">') < 100


def test_charts_are_cid_images_with_alt_text(letter):
    images = parse(letter.html).images
    cids = {img["src"].removeprefix("cid:") for img in images}
    assert cids == set(letter.images)
    for img in images:
        assert img["alt"] and "Bar chart" in img["alt"]
        assert img["width"] and img["height"]
    for png in letter.images.values():
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(png) < 40_000


def test_links_to_the_web_site_and_feedback(letter):
    hrefs = parse(letter.html).hrefs
    assert "https://hpc.example.org/usage/letters/2026-W47/alice" in hrefs
    assert "https://example.org/feedback?form=letters&letter_ref=2026-W47%3Aalice" in hrefs
    assert "mailto:hpc-support@example.org" in hrefs
    job_links = [h for h in hrefs if h.startswith("https://hpc.example.org/usage/jobs/turing/")]
    assert job_links


def test_text_part_says_the_same(letter):
    text = letter.text
    assert "IN SHORT\n========" in text
    assert "1. [Serious] CPU underuse in" in text
    assert max(len(line) for line in text.splitlines()) <= 78
    assert "NEWS FROM THE TURING CLUSTER TEAM" in text
    assert "Analysis ID: 2026-W47:alice" in text
    assert "<td" not in text and "&lt;" not in text and "&amp;" not in text


def test_long_tables_are_cut_and_counted(config, rules):
    short = dataclasses.replace(config, letters=dataclasses.replace(config.letters, max_rows=3))
    report = sample_report("alice", jobs=10)
    view = build_view(report, rules, short, charts=[])
    table = table_of(view, "resources", "latest_concerning")
    assert len(table.rows) == 3
    assert table.hidden_rows == len(report.sections[0].latest_concerning.rows) - 3 > 0


def test_letters_show_a_readable_subset_of_columns():
    table = Table(
        columns=["job_id", "node", "step", "energy_wh", "cpu_efficiency", "problems"],
        headings={}, help={},
        rows=[{"job_id": "1", "node": "n1", "step": None, "energy_wh": 3.0,
               "cpu_efficiency": 0.2, "problems": ["cpu_underuse"]}],
    )
    assert letter_columns(table) == ["job_id", "cpu_efficiency", "problems"]
    table.rows[0]["problems"] = []       # the engine's form: a list of rule ids, here none
    assert letter_columns(table) == ["job_id", "cpu_efficiency"]
    unknown = Table(columns=["a", "b"], headings={}, help={}, rows=[{"a": 1, "b": None}])
    assert letter_columns(unknown) == ["a"]


def test_hostile_job_names_are_escaped(config, rules):
    report = sample_report("alice", jobs=4)
    for section in report.sections:
        for table in (section.latest_concerning, section.all_latest):
            for row in table.rows:
                row["job_name"] = "<script>alert(1)</script>"
    html = render_letter(report, rules, config).html
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_an_unknown_rule_still_gets_a_badge_and_an_anchor(config, rules):
    report = sample_report("alice", jobs=3)
    report.findings.append(Finding("brand_new_rule", "medium", "alice", 1, None, "turing"))
    html = render_letter(report, rules, config).html
    assert 'id="problem-brand-new-rule"' in html
    links = parse(html)
    assert sorted({h[1:] for h in links.hrefs if h.startswith("#")} - links.anchors) == []


def test_all_good_letter(config, rules):
    report = sample_report("carol", jobs=3)
    report.findings.clear()
    for section in report.sections:
        section.latest_concerning.rows.clear()
        for table in (section.all_latest, section.history):
            for row in table.rows if table else []:
                row["problems"] = []
    letter = render_letter(report, rules, config)
    assert letter.problems == 0
    assert "Nothing to change." in letter.html
    assert "Nothing to change: no check found a problem" in letter.text
    assert not parse(letter.html).badges


def test_period_label():
    report = sample_report("alice", jobs=1)
    assert period_label(report.period) == "2026-W47, 16–22 Nov 2026"


def test_text_tables_align(config, rules):
    view = build_view(sample_report("alice", jobs=5), rules, config, charts=[])
    table = table_of(view, "resources", "latest_concerning")
    lines = text_table(table).splitlines()
    assert lines[0].startswith("Job ID")
    assert len(lines) == 2 + len(table.rows) == 7
    # Numbers are right-aligned: each ends where its column's rule of dashes ends.
    spans = [m.span() for m in re.finditer(r"-+", lines[1])]
    cores = [c.id for c in table.columns].index("cores")
    end = spans[cores][1]
    for line, row in zip(lines[2:], table.rows, strict=True):
        assert line[:end].endswith(row[cores].text)


# -- charts ----------------------------------------------------------------------------------


def test_cores_chart_shows_the_jobs_that_left_most_cores_idle():
    jobs = [
        {"job_id_display": "1", "job_name": "big", "ncpus": 64, "mean_busy_cores": 2.0,
         "elapsed_s": 36000},
        {"job_id_display": "2", "job_name": "fine", "ncpus": 4, "mean_busy_cores": 4.0,
         "elapsed_s": 36000},
        {"job_id_display": "3", "job_name": "small", "ncpus": 8, "mean_busy_cores": 1.0,
         "elapsed_s": 3600},
    ]
    chart = cores_chart(jobs)
    assert chart is not None
    assert "job 1 big: 2.0 of 64 cores; job 3 small: 1.0 of 8 cores." in chart.alt
    assert "fine" not in chart.alt  # no idle cores, nothing to show
    assert chart.png.startswith(b"\x89PNG")


def test_no_chart_without_data():
    assert cores_chart([{"job_id": 1}]) is None
    assert gpu_chart([{"job_id": 1, "gpus": 0, "gpu_avg_util_pct": None}]) is None


def test_tldr_names_one_change_per_resource_before_repeating_one(config, rules):
    report = sample_report("alice", jobs=2)
    report.findings[:] = (
        [Finding("cpu_underuse", "serious", "alice", i, None, "turing") for i in range(5)]
        + [Finding("low_concurrency", "serious", "alice", i, "0", "turing") for i in range(4)]
        + [Finding("memory_underuse", "medium", "alice", 9, None, "turing")]
    )
    ids = [a.rule.id for a in pick_advice(report, rules)]
    assert ids == ["cpu_underuse", "memory_underuse", "low_concurrency"]


def test_concerning_rows_that_make_the_letter_are_the_worst(config, rules):
    short = dataclasses.replace(config, letters=dataclasses.replace(config.letters, max_rows=2))
    report = sample_report("alice", jobs=2)
    table = report.sections[0].latest_concerning
    table.rows[:] = [
        {"job_id": "1", "problems": "time_limit_underuse"},
        {"job_id": "2", "problems": ["memory_underuse", "time_limit_underuse"]},
        {"job_id": "3", "problems": "cpu_underuse"},
    ]
    view = build_view(report, rules, short, charts=[])
    shown = view.sections[0].tables[0]
    assert [row[0].text for row in shown.rows] == ["3", "2"]
    assert shown.row_severity == ["serious", "medium"]
    assert shown.hidden_rows == 1


def test_all_jobs_table_is_left_out_when_it_repeats_the_problem_table(config, rules):
    report = sample_report("alice", jobs=6)
    resources = report.sections[0]
    resources.all_latest.rows[:] = list(resources.latest_concerning.rows)
    view = build_view(report, rules, config, charts=[])
    kinds = [t.kind for t in next(s for s in view.sections if s.id == "resources").tables]
    assert kinds == ["latest_concerning", "history"]


# -- waste, order, end states, GPUs per job (issue 12) -----------------------------------------


def test_waste_is_idle_core_hours_and_idle_gpu_hours():
    from watcher.letters.waste import idle_core_hours, idle_gpu_hours, standings

    job = {"elapsed_s": 7200, "ncpus": 8, "cpu_s": 3600 * 4, "gpus": 4, "gpu_avg_util_pct": 25.0}
    assert idle_core_hours(job) == 12.0            # 2 h × 8 cores − 4 core-hours busy
    assert idle_gpu_hours(job) == 6.0              # 2 h × 4 GPUs × 75 % idle
    assert idle_core_hours({**job, "cpu_s": 10**9}) == 0.0   # never below 0
    a, b = sample_report("alice", jobs=4), sample_report("bob", jobs=12)
    ranks = standings([a, b])
    assert sorted(s.rank for s in ranks.values()) == [1, 2] and ranks["bob"].users == 2


def test_gpu_rows_are_grouped_per_job(config, rules):
    report = sample_report("gina", jobs=2)
    job = report.jobs[0]
    job.update(gpus=4, gpu_avg_util_pct=20.0, elapsed_s=3600)
    gpu = next(s for s in report.sections if s.id == "gpu")
    rows = [{"job_id": job["job_id_display"], "job_name": "train", "gpu_index": i,
             "avg_util_pct": 80.0 if i == 0 else 0.0,
             "problems": ["gpu_never_used"] if i else []} for i in range(4)]
    gpu.all_latest.rows[:] = rows
    gpu.latest_concerning.rows[:] = rows[1:]
    view = build_view(report, rules, config, charts=[])
    table = table_of(view, "gpu", "latest_concerning")
    assert len(table.rows) == 1
    texts = [cell.text for cell in table.rows[0]]
    assert "3 of 4 never used" in texts and "3.20" in texts   # 1 h × 4 GPUs × 80 % idle
    assert [c.heading for c in table.columns][:3] == ["Job ID", "Name", "Idle GPU-hours"]


def test_rows_are_worst_first_by_waste_with_a_waste_column(config, rules):
    view = build_view(sample_report("alice", jobs=30), rules, config, charts=[])
    for kind in ("latest_concerning", "history"):
        table = table_of(view, "resources", kind)
        at = [c.id for c in table.columns].index("idle_core_hours")
        idle = [float(row[at].text.replace(",", "")) for row in table.rows]
        assert idle == sorted(idle, reverse=True) and len(idle) == config.letters.max_rows
        assert table.hidden_rows and "--sort waste" in table.more_command
    headings = {c.heading for s in view.sections for t in s.tables for c in t.columns}
    assert "Score" not in headings and not any("tilisation" in h for h in headings)


def test_bad_endings_come_first_and_red(config, rules):
    report = sample_report("alice", jobs=6)
    states = [("COMPLETED", 0, None), ("FAILED", 2, None), ("TIMEOUT", 0, None),
              ("FAILED", 0, 11), ("OUT_OF_MEMORY", 0, None), ("COMPLETED", 0, None)]
    for job, (state, code, sig) in zip(report.jobs, states, strict=True):
        job.update(state=state, exit_code=code, exit_signal=sig)
    view = build_view(report, rules, config, charts=[])
    ended = [row[2].text for row in view.ended.rows]
    assert ended[:2] == ["OUT_OF_MEMORY", "TIMEOUT"]
    assert set(ended[2:]) == {"FAILED, exit code 2", "FAILED, killed by SIGSEGV"}
    assert all(row[2].bad for row in view.ended.rows)
    assert view.ended_summary == "2 FAILED, 1 OUT_OF_MEMORY, 1 TIMEOUT"
    html = render_letter(report, rules, config).html
    tldr = html[html.index('id="tldr"'):html.index('id="ended"')]
    assert '<p class="bad" style="color:#c62828"><strong>4 jobs did not end well:' in tldr


def test_a_family_row_never_names_two_contradicting_rules(config, rules):
    report = sample_report("alice", jobs=6)
    history = report.sections[0].history
    history.rows[0]["problems"] = ["memory_oversubscription", "memory_underuse"]
    view = build_view(report, rules, config, charts=[])
    shown = [{b.rule_id for cell in row for b in cell.badges}
             for row in table_of(view, "resources", "history").rows]
    assert not any({"memory_underuse", "memory_oversubscription"} <= ids for ids in shown)
    assert any("memory_oversubscription" in ids for ids in shown)


def test_the_tldr_gives_the_requests_the_waste_as_nodes_and_the_rank(config, rules):
    from watcher.letters.waste import Standing

    letter = render_letter(sample_report("alice"), rules, config, Standing(3, 120, 6239.0))
    said = " ".join(letter.text.split())
    assert "Request: --cpus-per-task=" in said and "Request: --mem=" in said
    assert "core-hours reserved but idle: as much as" in said and "64-core node" in said
    assert "Of the 120 users of this week, your jobs left the 3rd most core-hours idle." in said
    no_rank = dataclasses.replace(config, letters=dataclasses.replace(config.letters,
                                                                      show_rank=False))
    assert "users of this week" not in render_letter(
        sample_report("alice"), rules, no_rank, Standing(3, 120, 6239.0)).text


def test_a_fine_user_gets_a_short_letter(config, rules):
    from watcher.letters.sample import fine_report

    letter = render_letter(fine_report("carol", jobs=13), rules, config)
    assert letter.problems == 0 and not letter.images
    said = " ".join(letter.text.split())
    assert "All 13 of your jobs in this period used what they asked for." in said
    assert "something to improve" not in letter.text + letter.html
    assert len(letter.html) < 15_000 and len(letter.text.splitlines()) < 30
    assert "hpc-support@example.org" in letter.html.rsplit('class="footer"', 1)[1]


def test_text_tables_cut_cells_instead_of_wrapping():
    from watcher.letters.plaintext import table

    lines = table(["Job ID", "Name", "Idle core-hours"],
                  [["12345", "x" * 120, "1,891"], ["12346", "short", "2.0"]],
                  [False, False, True], notes=["CPU underuse, " * 12, None]).splitlines()
    assert max(len(line) for line in lines) <= 78
    assert lines[3].startswith("12345  xxx") and "…" in lines[3] and lines[3].endswith("1,891")
    assert lines[4].startswith("    CPU underuse")      # the problems under their row
