"""The report card written to the job's stderr when it ends (like ``time``'s numbers).

Its first line is how the job ended (watcher.jobstate); a bad end is marked so that
:func:`paint` can make it red on a terminal. Numbers are formatted once, by watcher.units, so
that the headline and the findings round alike.
"""

from __future__ import annotations

import textwrap
from datetime import datetime
from functools import partial
from typing import Any

from watcher.card.ending import end_text
from watcher.units import NA, clock, energy, number, percent, share, size

_BAR = 24
# The card is sentences, not a table: a missing number reads "n/a", not a dash.
_size = partial(size, missing=NA)
_share = partial(share, missing=NA)


def _bar(share: float) -> str:
    filled = round(share * _BAR)
    return "█" * filled + "·" * (_BAR - filled)


def _line(label: str, text: str) -> str:
    return f"  {label:<13}{text}".rstrip()


def _usage(s: dict[str, Any]) -> list[str]:
    """CPU, cores busy and memory, from the samples."""
    lines: list[str] = []
    cores = s.get("cores_available")
    cpu_total = (s.get("cpu_user_s") or 0) + (s.get("cpu_system_s") or 0)
    mean = s["cores_in_use"]["mean"]
    lines.append(
        _line(
            "CPU",
            f"{_share(s.get('cpu_efficiency'))} efficiency: {cpu_total:.1f} core-s used "
            f"of {cores or '?'} cores × {clock(s.get('elapsed_s'))}"
            + (f" (mean {number(mean)} cores busy)" if mean is not None else ""),
        )
    )
    lines.append(
        _line("", f"user {s.get('cpu_user_s') or 0:.1f} s, system {s.get('cpu_system_s') or 0:.1f} s")
    )
    wait = s.get("cpu_wait_s")
    if wait is not None and cpu_total + wait > 0:
        # What the node withheld: the share of the time its threads wanted a CPU and waited.
        lines.append(_line("", f"waited {wait:.1f} s for a CPU: {_share(wait / (cpu_total + wait))}"
                               " of the time its threads wanted to run"))
    dist = s["cores_in_use"]["distribution"]
    if dist:
        lines.append(_line("Cores busy", "share of the time with N cores busy (partly busy: rounded up)"))
        for row in dist:
            lines.append(_line("", f"{row['cores']:>3} {_bar(row['share'])} {_share(row['share'])}"))

    lines.extend(_memory(s))
    return lines


# How the card names where the memory peak comes from (summary.json memory_source).
_SOURCES = {
    "cgroup": "as its cgroup charges it",
    "pss": "PSS: shared pages split among the processes sharing them",
    "rss": "RSS, resident memory",
}


def _memory(s: dict[str, Any]) -> list[str]:
    """The memory peak as the kernel charges it, its source, and the RSS sum when that reads
    notably higher (shared pages counted once per process)."""
    peak, requested = s.get("peak_memory_bytes"), s.get("mem_requested_bytes")
    if peak is None:  # a summary from before peak_memory_bytes
        peak = s.get("peak_rss_bytes")
    memory = f"peak {_size(peak)}"
    if requested:
        memory += f" of {_size(requested)} requested per node ({_share(s.get('mem_used_share'))})"
    lines = [_line("Memory", memory)]
    source = s.get("memory_source")
    if source:
        names = [_SOURCES.get(part, part) for part in source.split("+")]
        lines.append(_line("", f"({'; '.join(names)})"))
    rss = s.get("peak_rss_bytes")
    if rss is not None and peak is not None and rss > 1.1 * peak:
        lines.append(_line("", f"RSS summed over processes {_size(rss)}: a shared page once per process"))
    return lines


def _step_memory(step: dict[str, Any]) -> Any:
    peak = step.get("peak_memory_bytes")
    return step.get("peak_rss_bytes") if peak is None else peak


# The mark of a bad end's line: paint() makes that line red.
BAD_MARK = "✖ "
_RED, _RESET = "\x1b[1;31m", "\x1b[0m"


def paint(card: str) -> str:
    """The card with its bad-end line in bold red (ANSI), for a terminal."""
    return "\n".join(
        f"{_RED}{line}{_RESET}" if line.startswith("  " + BAD_MARK) else line
        for line in card.split("\n")
    )


def _started(iso: str | None) -> str | None:
    """'2026-12-03T12:13:07+00:00' -> '2026-12-03 12:13'."""
    if not iso:
        return None
    try:
        return f"{datetime.fromisoformat(iso):%Y-%m-%d %H:%M}"
    except ValueError:
        return iso


def _head(s: dict[str, Any]) -> list[str]:
    """How the job ended, first; then which job, where, when, and its command."""
    end = end_text(s)
    lines = [f"  {BAD_MARK if end.bad else ''}{end.text}"]
    job = f"job {s['job_id']}" if s.get("job_id") is not None else "local run"
    if s.get("job_name"):
        job += f" ({s['job_name']})"
    nodes = ", ".join(n["node"] for n in s.get("nodes", [])) or "?"
    started = _started(s.get("start"))
    lines.append(f"  {job} on {nodes}" + (f" · started {started}" if started else ""))
    if s.get("command"):
        command = " ".join(s["command"].split())   # one line: a script passed with -c has many
        command = command if len(command) <= 200 else command[:199] + "…"
        lines.append(_line("Command", command))
    return lines


def _findings(s: dict[str, Any]) -> list[str]:
    """Each finding: severity and title, its sentence, and the request that would have fitted."""
    findings = s.get("findings") or []
    lines: list[str] = []
    if findings:
        lines.append(_line("Findings", ""))
        for f in findings:
            where = f" (step {f['step']})" if f.get("step") else ""
            lines.append(_line("", f"[{f['severity']}] {f.get('title') or f['rule']}{where}"))
            sentence = f.get("sentence") or f.get("summary")
            if sentence:
                lines.extend(_line("", "    " + part) for part in textwrap.wrap(sentence, 60))
            if f.get("request"):
                lines.append(_line("", f"    Request: {f['request']}"))
            elif f.get("solution") and not f.get("advised"):
                first = f["solution"].split(". ")[0].rstrip(".") + "."
                for i, part in enumerate(textwrap.wrap(first, 58)):
                    lines.append(_line("", ("    → " if i == 0 else "      ") + part))
    elif s.get("findings") is not None:
        lines.append(_line("Findings", "none"))
    if s.get("findings_note"):
        lines.append(_line("", f"({s['findings_note']})"))
    return lines


def render_card(summary: dict[str, Any], *, output_dir: str | None = None) -> str:
    s = summary
    lines = ["", "─" * 22 + " turingwatch report card " + "─" * 22]
    lines.extend(_head(s))

    limit = s.get("time_limit_s")
    elapsed = clock(s.get("elapsed_s"))
    if limit:
        elapsed += f" of {clock(limit)} limit ({_share(s.get('time_limit_share'))} used)"
    lines.append(_line("Elapsed", elapsed))

    if s.get("not_measured"):
        # Unknown is not zero: no "0.0 core-s", no "peak 0 B" (summary.json's values are null).
        lines.append(_line("Measured", f"nothing: {s['not_measured']}"))
    else:
        lines.extend(_usage(s))

    for gpu in s.get("gpus", []):
        label = f"GPU {gpu['index']}" + (f"@{gpu['node']}" if len(s.get("nodes", [])) > 1 else "")
        util = gpu["mean_util_pct"]
        text = (
            f"{gpu.get('name') or gpu['uuid']}: mean util "
            + percent(util, missing=NA)
            + f", memory {_size(gpu['peak_mem_used_bytes'])}"
            + f" of {_size(gpu['mem_total_bytes'])}, energy {energy(gpu['energy_j'])}"
        )
        lines.append(_line(label, text))
        if gpu.get("no_process_share"):
            lines.append(_line("", f"no process of the job on it {_share(gpu['no_process_share'])}"
                               " of the time"))

    if s.get("steps") and not s.get("not_measured"):
        lines.append(_line("Steps", f"{'step':<12}{'CPU s':>10}{'eff.':>7}{'peak memory':>14}"))
        for step in s["steps"]:
            cpu = (step["cpu_user_s"] or 0) + (step["cpu_system_s"] or 0)
            lines.append(
                _line(
                    "",
                    f"{step['step']:<12}{cpu:>10.1f}{_share(step['cpu_efficiency']):>7}"
                    f"{_size(_step_memory(step)):>14}",
                )
            )

    if s.get("top_processes"):
        lines.append(_line("Top processes", ""))
        for proc in s["top_processes"]:
            lines.append(
                _line(
                    "",
                    f"{proc['comm']:<16} pid {proc['pid']:<8} step {proc['step']:<8}"
                    f"{proc['cpu_s'] or 0:>9.1f} s CPU {_size(proc['peak_rss_bytes']):>11}",
                )
            )

    intercept = s.get("intercepter")
    if intercept and intercept.get("text"):
        for i, text in enumerate(intercept["text"].splitlines()):
            lines.append(_line("Recycler" if i == 0 else "", text))

    lines.extend(_findings(s))

    if output_dir:
        lines.append(_line("Details", f"{output_dir}/report.html, {output_dir}/summary.json"))
    lines.append("─" * 69)
    return "\n".join(lines) + "\n"
