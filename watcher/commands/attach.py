"""``turingwatch attach``: sample a running job's processes on this node until it ends."""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from watcher.cli import AppContext, pass_app

if TYPE_CHECKING:
    from watcher.slurm.commands import JobExit

# Rounds in a row with none of the job's processes on this node before we call it ended.
_EMPTY_ROUNDS_TO_END = 2
log = logging.getLogger(__name__)


@click.command()
@click.option("-j", "--job", "job_id", type=int, help="Slurm job id (default: $SLURM_JOB_ID).")
@click.option("-i", "--interval", type=float, help="Seconds between samples (default 10, ≥ 0.5).")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory shared with the batch host's `turingwatch run` (default from config).",
)
@click.option(
    "--report/--no-report",
    default=None,
    help="Write this node's report at the end (default: only when started outside the job).",
)
@click.option(
    "--job-card",
    is_flag=True,
    help="Be the batch host's watcher: at the end wait for the other nodes' and print the "
    "whole job's card, as `run` does (scripts/watch.sh starts it so).",
)
@click.option(
    "--status-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --job-card: end when this file appears, and report the exit status written in "
    "it (watch.sh's EXIT trap writes the batch script's); without it, Slurm is asked.",
)
@click.option("--no-gpu", is_flag=True, help="Do not sample GPUs.")
@pass_app
def attach(
    app: AppContext,
    job_id: int | None,
    interval: float | None,
    output: Path | None,
    report: bool | None,
    job_card: bool,
    status_file: Path | None,
    no_gpu: bool,
) -> None:
    """Sample every process of a running Slurm job on this node, attributed to its steps.

    In a multi-node job, run one per node beside the batch host's `turingwatch run`, all
    writing to one shared directory; the batch host's report card then covers every node:

    \b
    srun --overlap --ntasks="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 \\
        turingwatch attach --output "$OUT" &
    turingwatch run --output "$OUT" -- srun ./solver

    It stops when the job has no process left on this node, when the batch host's run
    finishes (it leaves a STOP file in the directory), or on SIGINT/SIGTERM.

    With --job-card it plays the batch host's part instead of `run` (for a batch script that
    sources scripts/watch.sh): it stops when --status-file appears or the job ends, asks the
    other nodes' watchers to finish, and prints the whole job's card.
    """
    from watcher.files import private_dir
    from watcher.sampling.gpu import GpuSampler, visible_devices_from_env
    from watcher.sampling.sources import SlurmSource
    from watcher.slurm import env as jobenv
    from watcher.slurm.commands import SlurmCommands
    from watcher.watch.finish import finish_job
    from watcher.watch.runner import (
        Outcome,
        name_this_process,
        print_card,
        resolve_output_dir,
        sampling_interval,
    )
    from watcher.watch.session import STOP_MARKER, AlreadyWatched, Watch

    name_this_process()
    os.umask(0o077)  # what attach writes (spool, store, reports) is its owner's only
    config = app.config
    here = jobenv.detect()
    job_id = job_id if job_id is not None else here.job_id
    if job_id is None:
        raise click.UsageError("no job to attach to: give --job ID or run inside a Slurm job")
    inside = here.job_id == job_id
    job = here if inside else jobenv.JobContext(
        job_id, None, here.cluster, here.node, here.user_name, None, None, None, None, None
    )
    interval_s = sampling_interval(interval, config.sampler.interval_s, logger=log)
    output_dir = resolve_output_dir(config, job, output)
    stop_file = output_dir / STOP_MARKER

    slurm = SlurmCommands.from_config(config.slurm)
    source = SlurmSource(job_id, os.environ if inside else None, slurm=slurm)
    gpu = None
    if config.sampler.gpu and not no_gpu:
        gpu = GpuSampler(visible_devices_from_env(os.environ) if inside else None)

    if status_file is not None and not job_card:
        raise click.UsageError("--status-file goes with --job-card")

    class AttachWatch(Watch):
        def should_stop_early(self) -> bool:
            if self.empty_rounds >= _EMPTY_ROUNDS_TO_END:
                return True
            if job_card:  # the STOP file is ours to write, for the others
                return status_file is not None and status_file.exists()
            return stop_file.exists()

    try:
        private_dir(output_dir)
        watch = AttachWatch(
            output_dir=output_dir,
            job=job,
            mode="attach",
            interval_s=interval_s,
            source=source,
            gpu=gpu,
            cores_available=job.cpus_on_node or source.fallback_cpus,
            slurm_times=functools.partial(slurm.job_times, job_id, os.environ),
        )
    except AlreadyWatched as exc:
        log.warning("%s; nothing to do", exc)
        return
    except OSError as exc:
        where = exc.filename or output_dir
        raise click.ClickException(f"cannot write to {where}: {exc.strerror}") from None

    signalled: list[int] = []

    def finish(signum: int, _frame: object) -> None:
        signalled.append(signum)
        watch.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, finish)

    started = time.time()
    watch.start()
    watch.start_sending(config)
    watch.wait()
    if job_card:
        code, sig = script_exit(status_file, bool(signalled), functools.partial(slurm.job_exit, job_id))
        ended_by = "batch script ended" if status_file is not None and status_file.exists() else (
            "signal" if signalled else "job left this node")
        watch.stop({"exit_code": code, "exit_signal": sig, "ended_by": ended_by})
        begun = min(started, watch.job_started_at or started)
        outcome = Outcome(exit_code=code, exit_signal=sig, started=begun, ended=time.time())
        try:
            finish_job(
                config, output_dir=output_dir, job=job, session_id=watch.session_id,
                outcome=outcome, batch_host=True, show=print_card,
            )
        finally:
            watch.finish_sending()
        return
    watch.stop({"exit_code": None, "exit_signal": None, "ended_by": _ended_by(watch, stop_file)})

    if report if report is not None else not inside:
        outcome = Outcome(started=started, ended=time.time())
        finish_job(
            config, output_dir=output_dir, job=job, session_id=watch.session_id,
            outcome=outcome, batch_host=False, show=print_card,
        )
    watch.finish_sending()  # bounded: what is left stays in the spool for a later sender


def script_exit(
    status_file: Path | None, signalled: bool, ask_slurm: Callable[[], JobExit], retry_s: float = 1.0
) -> tuple[int | None, int | None]:
    """The batch script's (exit code, signal) for the card: what watch.sh's EXIT trap wrote,
    else what Slurm says (a script that exec'd, or one killed before its trap ran).

    Slurm says 0:0 until the script has ended: when a signal (the time limit, scancel) ended
    the watch at the same moment as the script, it is asked once more, ``retry_s`` later.
    """
    written = _read_status(status_file)
    if written is not None:
        return written, None
    for attempt in range(2):
        try:
            end = ask_slurm()
        except Exception as exc:  # no exit status on the card, but a card
            log.warning("cannot ask Slurm how the job ended: %s", exc)
            return None, None
        if end.exit_code is None or end.state in ("PENDING", "RUNNING", "SUSPENDED"):
            return None, None
        if end.exit_signal:
            return None, end.exit_signal
        if end.exit_code or not signalled or attempt:
            return end.exit_code, None
        time.sleep(retry_s)
        written = _read_status(status_file)
        if written is not None:
            return written, None
    return None, None


def _read_status(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) < 256 else None


def _ended_by(watch: object, stop_file: Path) -> str:
    if stop_file.exists():
        return "batch host finished"
    if getattr(watch, "empty_rounds", 0) >= _EMPTY_ROUNDS_TO_END:
        return "job left this node"
    return "signal"
