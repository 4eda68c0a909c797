"""Slurm through one door: the job's ``SLURM_*`` variables and Slurm's commands.

Nothing outside this package reads a ``SLURM_*`` variable or runs a Slurm command
(tests/test_slurm_door.py checks it). ``env``: the job's environment, parsed. ``call``: the one
runner (timeout, process group, errors that say what to try). ``commands``: each operation with
its configured path and timeout (``SlurmCommands.from_config(config.slurm)``). ``sacct``: the
arguments and environment of the importer's sacct call.
"""
