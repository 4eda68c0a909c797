"""``turingwatch attach``: sample a running job's processes on this node until it ends."""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from pathlib import Path

import click

from watcher.cli import AppContext, pass_app

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
@click.option("--no-gpu", is_flag=True, help="Do not sample GPUs.")
@pass_app
def attach(
    app: AppContext,
    job_id: int | None,
    interval: float | None,
    output: Path | None,
    report: bool | None,
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

    class AttachWatch(Watch):
        def should_stop_early(self) -> bool:
            return self.empty_rounds >= _EMPTY_ROUNDS_TO_END or stop_file.exists()

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

    def finish(signum: int, _frame: object) -> None:
        watch.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, finish)

    started = time.time()
    watch.start()
    watch.start_sending(config)
    watch.wait()
    watch.stop({"exit_code": None, "exit_signal": None, "ended_by": _ended_by(watch, stop_file)})

    if report if report is not None else not inside:
        outcome = Outcome(started=started, ended=time.time())
        finish_job(
            config, output_dir=output_dir, job=job, session_id=watch.session_id,
            outcome=outcome, batch_host=False, show=print_card,
        )
    watch.finish_sending()  # bounded: what is left stays in the spool for a later sender


def _ended_by(watch: object, stop_file: Path) -> str:
    if stop_file.exists():
        return "batch host finished"
    if getattr(watch, "empty_rounds", 0) >= _EMPTY_ROUNDS_TO_END:
        return "job left this node"
    return "signal"
