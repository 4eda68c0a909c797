"""``turingwatch job JOBID``: one job as seff and jobstats show it, with its findings.

Read-only (watcher/analysis/lookup.py): the site store, or the server's published snapshot.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import click

from watcher import units
from watcher.cli import AppContext, pass_app
from watcher.commands.jobs import efficiency_colour, paint, source_options, use_colour

_SEVERITY_COLOUR = {"serious": "red", "medium": "yellow", "info": "blue"}


@click.command("job")
@click.argument("job_id", metavar="JOBID")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--no-judge", is_flag=True,
              help="Do not judge a job the analysis has not seen yet; say so instead.")
@source_options
@pass_app
def job(app: AppContext, job_id: str, fmt: str, no_judge: bool, store_path: str | None,
        published: Path | None, cluster: str | None, colour: str) -> None:
    """Show one job: its end, elapsed of limit, CPU, memory and GPU efficiency, and findings.

    JOBID as Slurm prints it (1234, 1234_5 for an array task, 1234+1 for a het component).
    A job the analysis has not judged yet is judged now, without storing anything.
    """
    from watcher.analysis.lookup import check_may_see, find_job, job_report, open_source

    config = app.config
    source = open_source(config, store_path, published)
    with source.store:
        row = find_job(source, job_id, cluster)
        check_may_see(config, row["user_name"], f"job {row['job_id_display']}")
        report = job_report(source, config, row, judge=not no_judge)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2, default=str))
        return
    on = use_colour(colour)
    for line in text_lines(report, colour=on):
        click.echo(line, color=on)  # click strips colour off a pipe unless told


def _wrapped(text: str) -> list[str]:
    return textwrap.wrap(text, width=100, initial_indent=" " * 6, subsequent_indent=" " * 6)


def _label(name: str) -> str:
    return f"{name + ':':<10}"


def text_lines(r: dict[str, Any], *, colour: bool) -> list[str]:
    """The one screen of ``turingwatch job``."""
    nbsp = lambda text: text.replace("\u00a0", " ")  # noqa: E731 - terminals, not typesetting
    where = ", ".join(
        f"{k} {r[v]}" for k, v in (("account", "account"), ("partition", "partition"),
                                   ("cluster", "cluster")) if r[v])
    lines = [paint(f"Job {r['job_id']}" + (f" ({r['name']})" if r["name"] else "")
                   + f" of {r['user']}", None, colour, bold=True)]
    if where:
        lines.append(f"{'':10}{where}")
    end = r["end"]
    state_colour = "red" if end["bad"] else "cyan" if end["running"] else "green"
    lines.append(_label("State") + paint(end["text"], state_colour, colour, bold=end["bad"]))
    nodes = f"{r['nodes']}" if r["nodes"] is not None else "-"
    if r["nodelist"]:
        nodes += f" ({r['nodelist']})"
    lines.append(_label("Nodes") + nodes)

    elapsed = units.clock(r["elapsed_s"], missing="-")
    if r["time_limit_s"]:
        elapsed += (f" of {units.clock(r['time_limit_s'])} limit ("
                    + paint(units.share(r["time_efficiency"]),
                            efficiency_colour(r["time_efficiency"]), colour) + ")")
    else:
        elapsed += " (no time limit)"
    lines.append(_label("Elapsed") + elapsed)

    if r["cpu_efficiency"] is not None:
        busy = (r["cpu_time_s"] or 0) / r["elapsed_s"] if r["elapsed_s"] else 0
        lines.append(
            _label("CPU") + paint(units.share(r["cpu_efficiency"]), efficiency_colour(
                r["cpu_efficiency"]), colour)
            + f" of {r['cores']} cores ({busy:.1f} busy on average;"
            f" {units.clock(r['cpu_time_s'])} CPU time); {r['idle_core_hours']:,.2f} idle core-hours")
    else:
        lines.append(_label("CPU") + f"{r['cores'] or '-'} cores; no CPU time known")
    if r["mem_requested_bytes"] or r["mem_peak_bytes"]:
        mem = nbsp(units.size(r["mem_peak_bytes"], missing="unknown")) + " peak"
        if r["mem_requested_bytes"]:
            mem += (f" of {nbsp(units.size(r['mem_requested_bytes']))} requested ("
                    + paint(units.share(r["mem_efficiency"]), efficiency_colour(
                        r["mem_efficiency"]), colour) + ")")
        lines.append(_label("Memory") + mem)
    if r["gpus"]:
        if r["gpu_utilization"] is not None:
            lines.append(_label("GPU") + f"{r['gpus']} GPU(s), "
                         + paint(units.share(r["gpu_utilization"]), efficiency_colour(
                             r["gpu_utilization"]), colour)
                         + f" mean utilization; {r['idle_gpu_hours']:,.2f} idle GPU-hours")
        else:
            lines.append(_label("GPU") + f"{r['gpus']} GPU(s), utilization not sampled")
    for g in r["per_gpu"]:
        memory = ""
        if g["mem_used_bytes"] is not None:
            memory = f", {nbsp(units.size(g['mem_used_bytes']))}"
            if g["mem_total_bytes"]:
                memory += f" of {nbsp(units.size(g['mem_total_bytes']))}"
            memory += " memory at most"
        lines.append(f"{'':10}{g['node']} GPU {g['gpu_index']}"
                     + (f" ({g['gpu_name']})" if g["gpu_name"] else "")
                     + f": {units.share(g['utilization'])} busy{memory}, {g['samples']} samples")
    if r["per_node"]:
        lines.append(_label("Per node") + "(sampled by the watcher)")
        for n in r["per_node"]:
            busy = (n["cpu_s"] or 0) / n["span_s"] if n["span_s"] else None
            lines.append(
                f"{'':10}{n['node']}: {n['cores'] or '-'} cores, "
                + (f"{busy:.1f} busy ({units.share(n['cpu_efficiency'])})" if busy is not None
                   else "CPU not measurable")
                + f", memory peak {nbsp(units.size(n['mem_peak_bytes']))},"
                f" {n['samples']} samples over {nbsp(units.duration(n['span_s']))}")
    elif r["per_gpu"]:
        lines.append(_label("Per node") + "CPU and memory not sampled (GPU samples only)")
    else:
        lines.append(_label("Sampled") + "no: judged from accounting only (no samples)")

    lines.append("")
    analysis = r["analysis"]
    findings = r["findings"]
    if analysis["status"] == "not analyzed":
        lines.append(f"Findings: not analyzed yet ({analysis.get('reason')})")
        return lines
    how = (f"from the analysis of {analysis['period']}" if analysis["status"] == "stored"
           else "judged now, not stored")
    if not findings:
        lines.append(f"Findings ({how}): none")
        return lines
    lines.append(f"Findings ({how}):")
    for f in findings:
        gpu = f["metrics"].get("gpu_index", f["gpu"])  # the index NVML and nvidia-smi show
        where = "".join(f" {k} {v}" for k, v in (("step", f["step"]), ("node", f["node"]),
                                                 ("GPU", gpu)) if v is not None)
        lines.append("  " + paint(f"[{f['severity']}]", _SEVERITY_COLOUR.get(f["severity"]), colour)
                     + f" {f['title']}{where}")
        if f["sentence"]:
            lines.extend(_wrapped(f["sentence"]))
        if f["request"]:
            lines.append("      next time: " + paint(f["request"], None, colour, bold=True))
        elif f["solution"]:
            lines.extend(_wrapped(f["solution"]))
    return lines
