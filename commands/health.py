"""Readiness and the queue's readings: the delivery worker's heartbeat, /readyz's checks,
and the database figures /metrics reads at each scrape.

The heartbeat is a row of ``rate_counters`` (bucket ``heartbeat:delivery``, its window the
second of the last beat): each delivery worker writes it at most every ``BEAT_EVERY``
seconds, and the row of the second before is deleted as the next is written (the rate
limiter's own sweep deletes it too once old), so the table holds about one row for it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from commands.ratelimit import DatabaseLimiter
from models import Database, Delivery, RateCounter
from models.messages import HELD
from models.migrate import current_revision, head_revision
from models.webhooks import WebhookDelivery

log = logging.getLogger("postern.health")

HEARTBEAT = "heartbeat:delivery"
BEAT_EVERY = 10.0  # seconds between a worker's beats
STALE_AFTER = 60  # seconds without a beat before /readyz says no worker is running


class Heartbeat:
    """A delivery worker's sign of life, written at most every ``BEAT_EVERY`` seconds."""

    def __init__(self, db: Database, clock: Callable[[], datetime]):
        self._beats = DatabaseLimiter(db, 2**31 - 1, 1, clock, scopes=("heartbeat:",))
        self._next = 0.0

    def beat(self) -> None:
        """Write the beat if it is time; a failure is logged (the next round tries again)."""
        if time.monotonic() < self._next:
            return
        try:
            self._beats.hit(HEARTBEAT)
        except SQLAlchemyError as exc:
            log.warning("worker heartbeat not written", extra={"error": type(exc).__name__})
            return
        self._next = time.monotonic() + BEAT_EVERY


def last_beat(db: Database) -> datetime | None:
    """When a delivery worker last wrote its heartbeat (one primary-key read)."""
    with db.read_connection() as conn:
        second = conn.scalar(
            select(func.max(RateCounter.window_start)).where(RateCounter.bucket == HEARTBEAT)
        )
    return None if second is None else datetime.fromtimestamp(int(second), UTC)


@functools.cache
def _head() -> str:
    return head_revision()


@dataclass(frozen=True)
class Readiness:
    """/readyz's answer: each check's finding ("ok" or what is wrong); ready when all are."""

    checks: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(v == "ok" for v in self.checks.values())


def readiness(db: Database, now: datetime) -> Readiness:
    """Whether the database answers, its schema is current, and a delivery worker beat
    within ``STALE_AFTER`` seconds of ``now``."""
    checks: dict[str, str] = {}
    try:
        db.ping()
    except SQLAlchemyError:
        return Readiness({"database": "unreachable", "migrations": "unknown", "worker": "unknown"})
    checks["database"] = "ok"
    try:
        current = current_revision(db.engine)
        head = _head()
        checks["migrations"] = "ok" if current == head else f"at {current or 'nothing'}, not {head}"
        beat = last_beat(db)
    except SQLAlchemyError:
        checks.setdefault("migrations", "unreadable")
        checks["worker"] = "unknown"
        return Readiness(checks)
    if beat is None:
        checks["worker"] = "no delivery worker has reported"
    else:
        age = (now - beat).total_seconds()
        checks["worker"] = "ok" if age <= STALE_AFTER else f"last reported {int(age)} seconds ago"
    return Readiness(checks)


@dataclass(frozen=True)
class QueueReadings:
    """The queue as the database holds it now (read at each scrape of /metrics)."""

    due: int  # deliveries due now (queued or deferred, their time come)
    # deliveries waiting for a later time: SendAt, a retry's backoff, or being sent (a
    # claim moves due_at to its end)
    scheduled: int
    oldest_due_seconds: float  # how long the longest-waiting due delivery has been due
    held: int  # deliveries parked after repeated unexpected failures
    webhook_backlog: int  # webhook deliveries waiting to be posted (or retried)


def queue_readings(db: Database, now: datetime) -> QueueReadings:
    """Read the queue: counts and the oldest due time over the ``due_at`` indexes (which hold
    only pending rows), and the held deliveries."""
    with db.read_connection() as conn:
        due, oldest = conn.execute(
            select(func.count(), func.min(Delivery.due_at))
            .select_from(Delivery)
            .where(Delivery.due_at <= now)
        ).one()
        scheduled = (
            conn.scalar(select(func.count()).select_from(Delivery).where(Delivery.due_at > now))
            or 0
        )
        held = (
            conn.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == HELD))
            or 0
        )
        backlog = (
            conn.scalar(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.due_at.is_not(None))
            )
            or 0
        )
    age = 0.0
    if oldest is not None:
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
        age = max(0.0, (now - oldest).total_seconds())
    return QueueReadings(int(due), int(scheduled), age, int(held), int(backlog))
