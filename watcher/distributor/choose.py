"""Which nodes the distributor asks for next: busiest first, none twice at once, none too soon."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from watcher.slurm.commands import QueuedJob


def choose_nodes(
    running: Mapping[str, Iterable[str]],
    own: Iterable[QueuedJob],
    sampled_at: Mapping[str, float],
    *,
    now: float,
    job_name: str,
    cooldown_s: float,
    concurrent: int,
) -> list[str]:
    """The nodes to submit one scrape job to each, in order, busiest first.

    Args:
        running: node -> names of the jobs running on it (every user's).
        own: the distributor's own pending and running jobs.
        sampled_at: node -> when a scrape job was last submitted to it (epoch seconds).
        job_name: the scrape jobs' name: they do not make a node busy.
        cooldown_s: a node sampled less than this long ago is left alone.
        concurrent: the most own jobs at once, those already queued included.
    """
    own = list(own)
    slots = concurrent - len(own)
    if slots <= 0:
        return []
    taken = {node for job in own for node in job.nodes}
    busy = {node: sum(1 for name in names if name != job_name) for node, names in running.items()}
    candidates = [
        node for node, count in busy.items()
        if count > 0 and node not in taken and now - sampled_at.get(node, float("-inf")) >= cooldown_s
    ]
    candidates.sort(key=lambda node: (-busy[node], node))
    return candidates[:slots]
