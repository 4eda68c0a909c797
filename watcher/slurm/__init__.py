"""Slurm through one door: the job's ``SLURM_*`` variables and Slurm's commands."""
