"""The distributor: samples busy nodes through small Slurm allocations (docs/distributor.md).

``choose``: which nodes to ask for next (a pure function of the queue and its own state).
``loop``: one look at the queue after another, the scrape jobs it submits and cancels, the
errors it logs once per cause, and its state file (``distributor.state``).
Every Slurm command goes through :class:`watcher.slurm.commands.SlurmCommands`.
"""
