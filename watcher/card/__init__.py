"""The report card of one job: its numbers (``summary.json``), the text card, ``report.html``."""
