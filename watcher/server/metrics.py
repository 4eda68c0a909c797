"""What the server counts, for ``GET /metrics`` (Prometheus text format) and ``status``.

One registry per server (not prometheus_client's global one), so that tests can run several
servers in one process and each counts only its own.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# The *_created series double the output and nobody graphs them.
disable_created_metrics()


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("turingwatch_ingest_requests", "ingest requests answered, by HTTP status",
                                ["code"], registry=r)
        self.lines = Counter("turingwatch_ingest_lines", "spool lines stored (new ones)", registry=r)
        self.duplicates = Counter("turingwatch_ingest_duplicate_lines",
                                  "spool lines received that the store held already", registry=r)
        self.rejected = Counter("turingwatch_ingest_rejected", "ingest requests refused, by reason",
                                ["reason"], registry=r)
        self.lag = Gauge("turingwatch_ingest_lag_seconds",
                         "age of the oldest batch accepted and not yet in the store", registry=r)
        self.journal_bytes = Gauge("turingwatch_journal_bytes",
                                   "bytes of accepted batches waiting in the journal", registry=r)
        self.last_import = Gauge("turingwatch_last_import_timestamp_seconds",
                                 "when the last accounting import ended", registry=r)
        self.last_analysis = Gauge("turingwatch_last_analysis_timestamp_seconds",
                                   "when the last period analysis ended", registry=r)
        self.last_publish = Gauge("turingwatch_last_publish_timestamp_seconds",
                                  "when the store was last published for readers", registry=r)
        self.sender_spool = Gauge("turingwatch_sender_spool_bytes",
                                  "undelivered spool bytes a sender reported, by node",
                                  ["node"], registry=r)
        self.apply_seconds = Histogram("turingwatch_apply_seconds", "time to store one batch",
                                       registry=r)
        self.distributor_jobs = Gauge("turingwatch_distributor_jobs",
                                      "the distributor's scrape jobs, by state, as it last wrote",
                                      ["state"], registry=r)
        self.task_failures = Counter("turingwatch_task_failures",
                                     "scheduled tasks that failed, by task", ["task"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
