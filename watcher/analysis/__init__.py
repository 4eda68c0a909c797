"""The analysis engine: rules over samples and accounting, per job, per user, per period."""
