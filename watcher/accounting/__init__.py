"""Slurm accounting: parsing sacct output and importing jobs and steps into the store."""
