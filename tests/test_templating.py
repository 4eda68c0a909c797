"""The one Jinja environment: site overrides, ``default:`` names, escaping, filters, and that the
card's report.html and the letters render as they did with two environments."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import jinja2
import pytest
from test_letters import SITE_ENV

from watcher.analysis.rules import load_rules
from watcher.card.html import render_report_html
from watcher.config import load_config
from watcher.letters import render_letter
from watcher.letters.sample import sample_report
from watcher.templating import environment

GOLDEN = Path(__file__).parent / "fixtures" / "letters" / "sample-alice.txt"


@pytest.fixture(scope="module")
def config():
    return load_config(None, environ=SITE_ENV)


@pytest.fixture(scope="module")
def rules(config):
    return {r.id: r for r in load_rules(config).rules}


def _with_templates(config, directory: Path):
    return dataclasses.replace(
        config, letters=dataclasses.replace(config.letters, templates_dir=str(directory)))


def _squash(html: str) -> str:
    """HTML with the whitespace a browser ignores taken out (between tags, at the end of a
    stylesheet)."""
    html = re.sub(r"\s+</style>", "</style>", html)
    return re.sub(r"\s+", " ", re.sub(r">\s+<", "><", html)).strip()


def _summary() -> dict:
    """A report card summary with every part report.html shows."""
    timeline = [{"t": t, "node": "n1", "cores_in_use": 1.0 + t % 3, "rss_bytes": (t + 1) << 28}
                for t in range(0, 60, 10)]
    return {
        "job_id": 4711, "exit_code": 0, "exit_signal": None, "elapsed_s": 93784.0,
        "time_limit_s": 172800, "time_limit_share": 0.54, "cores_available": 16,
        "cpu_user_s": 300.0, "cpu_system_s": 12.5, "cpu_efficiency": 0.0832,
        "cores_in_use": {"mean": 1.3, "distribution": [{"cores": 1, "share": 0.7},
                                                       {"cores": 3, "share": 0.3}]},
        "peak_rss_bytes": 5 << 30, "mem_requested_bytes": 16 << 30, "mem_used_share": 0.31,
        "nodes": [{"node": "n1"}],
        "steps": [{"step": "0", "nodes": ["n1"], "cpu_user_s": 30.0, "cpu_system_s": 1.0,
                   "cpu_efficiency": 0.9, "peak_rss_bytes": 1 << 30, "read_bytes": None,
                   "write_bytes": 4096}],
        "gpus": [{"index": 0, "node": "n1", "name": "A100", "uuid": "GPU-1",
                  "mean_util_pct": 43.6, "peak_mem_used_bytes": 30 << 30,
                  "mem_total_bytes": 40 << 30, "energy_j": 5.4e6, "mean_power_w": 212.3,
                  "no_process_share": 0.07}],
        "top_processes": [{"comm": "python", "pid": 123, "step": "0", "node": "n1",
                           "cpu_s": 290.0, "peak_rss_bytes": 1 << 30, "cmdline": "python <x>"}],
        "intercepter": {"text": "recycled 3 GiB"},
        "findings": [{"rule": "cpu_underuse", "severity": "serious", "title": "CPU underuse",
                      "step": None, "summary": "cpu efficiency 8.3%", "solution": "Use `-c 1`."}],
        "timeline": timeline, "gpu_timeline": [],
    }


# -- the same output as before ---------------------------------------------------------------


def test_the_text_letter_is_byte_for_byte_the_recorded_one(config, rules):
    text = render_letter(sample_report("alice"), rules, config).text
    if os.environ.get("TW_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["report.html.j2", "letter.html.j2"])
def test_html_templates_do_not_depend_on_the_whitespace_setting(name, config, rules):
    # The card's report.html was written for trim_blocks/lstrip_blocks, the letters for
    # Jinja's default; in the one environment both must mean the same page under either.
    env = environment()
    trimmed = env.overlay(trim_blocks=True, lstrip_blocks=True, cache_size=0)
    if name == "report.html.j2":
        context = {"s": _summary(), "charts": ["<svg></svg>"], "version": "test"}
    else:
        from watcher.letters.view import build_view

        view = build_view(sample_report("alice", jobs=6), rules, config, charts=[])
        context = {"v": view, "cids": {}}
    ours = env.get_template(name).render(**context)
    theirs = trimmed.get_template(name).render(**context)
    assert _squash(ours) == _squash(theirs)


def test_report_html_shows_the_units_formatters_output():
    html = render_report_html(_summary())
    assert "1-02:03:04 of 2-00:00:00" in html          # clock form of elapsed and limit
    assert "5.0\u00a0GiB" in html and "n/a" in html   # bytes, and a missing read counter
    assert ">8.3%<" in html and "1.50 kWh" in html      # a small share keeps its decimal
    assert "<code>-c 1</code>" in html


# -- one environment, overridable ------------------------------------------------------------


def test_a_site_template_wins_over_the_shipped_one(tmp_path, config, rules):
    (tmp_path / "letter.txt.j2").write_text("Dear {{ v.user }}, see the web site.\n")
    letter = render_letter(sample_report("alice", jobs=3), rules, _with_templates(config, tmp_path))
    assert letter.text == "Dear alice, see the web site.\n"
    assert "Hello alice" in letter.html   # the HTML part is still the shipped one


def test_an_override_can_extend_and_include_the_shipped_template(tmp_path, config, rules):
    report = sample_report("alice", jobs=3)
    shipped = render_letter(report, rules, config)
    (tmp_path / "letter.html.j2").write_text('{% extends "default:letter.html.j2" %}')
    (tmp_path / "letter.txt.j2").write_text(
        '{% include "default:letter.txt.j2" %}\n\nP.S. The cluster is down on Monday.')
    site = render_letter(report, rules, _with_templates(config, tmp_path))
    assert site.html == shipped.html
    assert site.text == shipped.text.rstrip("\n") + "\n\nP.S. The cluster is down on Monday.\n"


def test_a_shipped_partial_can_be_overridden_alone(tmp_path):
    (tmp_path / "report.html.j2").write_text("{% include 'part.html.j2' %}")
    (tmp_path / "part.html.j2").write_text("site part")
    assert environment(tmp_path).get_template("report.html.j2").render() == "site part"
    assert "<!doctype html>" in environment(tmp_path).get_template(
        "default:report.html.j2").render(s=_summary(), charts=[], version="x")


def test_html_is_escaped_and_plain_text_is_not(tmp_path):
    (tmp_path / "x.html.j2").write_text("{{ name }}")
    (tmp_path / "x.txt.j2").write_text("{{ name }}")
    env = environment(tmp_path)
    assert env.get_template("x.html.j2").render(name="<b>&") == "&lt;b&gt;&amp;"
    assert env.get_template("x.txt.j2").render(name="<b>&") == "<b>&"


def test_an_undefined_name_is_an_error_not_an_empty_string():
    with pytest.raises(jinja2.UndefinedError):
        environment().from_string("{{ nobody }}").render()


def test_the_unit_formatters_are_filters():
    env = environment()
    rendered = env.from_string(
        "{{ 3221225472 | bytes }}|{{ 5400 | duration }}|{{ 93784 | clock }}|{{ 9.3 | pct }}|"
        "{{ 0.42 | share }}|{{ 4096 | number }}|{{ 5400 | energy }}|{{ 3 | plural('job') }}|"
        "{{ (2**30) | by_name('peak_rss_bytes') }}|{{ none | bytes(missing='n/a') }}"
    ).render()
    assert rendered == ("3.0\u00a0GiB|1\u00a0h 30\u00a0min|1-02:03:04|9.3%|42%|4,096|1.5 Wh|"
                        "3 jobs|1.0\u00a0GiB|n/a")
