"""Prometheus metrics: what every role counts, the queue's readings, and /metrics' text.

Counters and histograms are kept by ``prometheus_client``. Under gunicorn (``postern serve``,
``postern api``) every process of the instance writes them to files in one directory
(``PROMETHEUS_MULTIPROC_DIR``, set by app/cli.py before this module is first imported), and
/metrics adds up the files of every process: API workers, the delivery worker, the SMTP
relay. Without that directory (a Flask test client, a role on its own) the counts are this
process's. The database readings (queue depth and age, held messages, webhook backlog) are
not counted: each scrape reads them (``QueueCollector``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from commands import Gateway, observers
from commands.health import queue_readings
from commands.observers import Accepted

__all__ = ["CONTENT_TYPE_LATEST", "MULTIPROC_ENV", "mark_process_dead"]

log = logging.getLogger("postern.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Whether this process writes its metrics to the shared directory (decided when
# prometheus_client was first imported: the variable must be set before).
MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))

OUTCOMES = ("delivered", "deferred", "bounced", "failed", "suppressed", "held")
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

MESSAGES_ACCEPTED = Counter(
    "postern_messages_accepted",
    "Messages accepted, by the transport they came by (Message.source).",
    ["source"],
)
RECIPIENTS_ACCEPTED = Counter(
    "postern_recipients_accepted",
    "Recipients queued for delivery with accepted messages, by transport.",
    ["source"],
)
DELIVERIES = Counter(
    "postern_deliveries",
    "Deliveries by what became of them: delivered, deferred (to be retried), bounced, "
    "failed, held (by the delivery worker), suppressed (at acceptance).",
    ["outcome"],
)
WEBHOOK_POSTS = Counter(
    "postern_webhook_posts",
    "Webhook POSTs recorded, by outcome: succeeded, retrying, failed (given up).",
    ["outcome"],
)
SMTP_SESSIONS = Counter(
    "postern_smtp_sessions",
    "SMTP connections the relay took, by listener (submission, tls, inbound).",
    ["listener"],
)
SMTP_AUTH_FAILURES = Counter(
    "postern_smtp_auth_failures",
    "SMTP AUTH attempts refused (wrong credentials, or throttled after failures).",
    ["listener"],
)
HTTP_DURATION = Histogram(
    "postern_http_request_duration_seconds",
    "HTTP requests by route (Flask's URL rule) and status class, and how long they took.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BATCH_DURATION = Histogram(
    "postern_worker_batch_duration_seconds",
    "Batches the workers claimed, handled and committed, and how long each took.",
    ["worker"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)

for _outcome in OUTCOMES:  # shown from the start, at 0
    DELIVERIES.labels(_outcome)


def message_accepted(told: Accepted) -> None:
    MESSAGES_ACCEPTED.labels(told.source).inc()
    RECIPIENTS_ACCEPTED.labels(told.source).inc(told.queued)
    if told.suppressed:
        DELIVERIES.labels("suppressed").inc(told.suppressed)


def deliveries_recorded(counts: Mapping[str, int]) -> None:
    """The delivery worker's committed outcomes (commands/delivery/outcomes.py)."""
    for outcome, n in counts.items():
        DELIVERIES.labels(outcome).inc(n)


def webhook_posted(outcome: str) -> None:
    WEBHOOK_POSTS.labels(outcome).inc()


def smtp_session(listener: str) -> None:
    SMTP_SESSIONS.labels(listener).inc()


def smtp_auth_failed(listener: str) -> None:
    SMTP_AUTH_FAILURES.labels(listener).inc()


def http_request(method: str, route: str | None, status: int, seconds: float) -> None:
    """One request: ``route`` is the URL rule that matched (None: none did), never the path,
    so that the labels stay few."""
    HTTP_DURATION.labels(
        method if method in _METHODS else "other", route or "unmatched", f"{status // 100}xx"
    ).observe(seconds)


def batch_done(worker: str, seconds: float) -> None:
    BATCH_DURATION.labels(worker).observe(seconds)


def install() -> None:
    """Count the messages the gateway accepts in this process (a listener of its own)."""
    observers.on_accepted(message_accepted)


class QueueCollector(Collector):
    """The queue as the database holds it, read at each scrape."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        try:
            r = queue_readings(self.gateway.db, self.gateway.clock())
        except SQLAlchemyError as exc:
            log.warning("metrics: queue not readable", extra={"error": type(exc).__name__})
            return
        depth = GaugeMetricFamily(
            "postern_queue_depth",
            "Deliveries waiting: due now, or later (SendAt, a retry's backoff, being sent).",
            labels=["state"],
        )
        depth.add_metric(["due"], r.due)
        depth.add_metric(["scheduled"], r.scheduled)
        yield depth
        yield GaugeMetricFamily(
            "postern_queue_oldest_due_age_seconds",
            "How long the longest-waiting due delivery has been due (0: none is).",
            value=r.oldest_due_seconds,
        )
        yield GaugeMetricFamily(
            "postern_held_deliveries",
            "Deliveries held after repeated unexpected failures (ReleaseHeldMessages).",
            value=r.held,
        )
        yield GaugeMetricFamily(
            "postern_webhook_backlog",
            "Webhook deliveries waiting to be posted or retried.",
            value=r.webhook_backlog,
        )


def render(gateway: Gateway) -> bytes:
    """/metrics' text: every process's counts (or this one's), then the queue's readings."""
    if MULTIPROCESS:
        counted = CollectorRegistry()
        MultiProcessCollector(counted)  # type: ignore[no-untyped-call]
    else:
        counted = REGISTRY
    readings = CollectorRegistry(auto_describe=False)
    readings.register(QueueCollector(gateway))
    return generate_latest(counted) + generate_latest(readings)
