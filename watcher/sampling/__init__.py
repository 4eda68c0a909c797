"""Sampling a job's processes on one node: /proc, cgroups, Slurm step discovery and NVML."""
