"""The webhook sender: claims due webhook deliveries, posts them signed, records each attempt.

It runs in every ``postern worker`` (and so in ``postern serve``), on a thread of its own
with its own asyncio loop: it fans new events out into deliveries, claims as many due
deliveries as it has free slots (``webhooks.concurrency``), posts them with httpx, and
records each attempt in a transaction of its own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, select, update

from app.workers.delivery import new_worker_id
from app.workers.webhook_client import Refused, response_snippet, webhook_client
from commands.webhooks.fanout import fan_out
from commands.webhooks.payload import event_body, signature_headers
from core.clock import utcnow
from core.crypto import SecretBox
from core.settings import Config
from models import Database, Domain, Event, WebhookAttempt, WebhookDelivery
from models.webhooks import FAILED, PENDING, SUCCEEDED

log = logging.getLogger("postern.webhooks")

CLAIM_MARGIN = 60  # seconds a claim outlasts the POSTs it was made for
MAX_ERROR = 1000  # characters of an error kept with an attempt
PRUNE_EVERY = 3600  # seconds between deletions of old finished deliveries


@dataclass
class Post:
    """A claimed delivery, ready to post."""

    delivery_id: int
    url: str
    message_id: str  # the event's uid: webhook-id, the same on every retry
    body: bytes
    signing_key: str


@dataclass
class Attempt:
    """How one POST went."""

    delivery_id: int
    at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None
    final: bool = False  # not worth retrying (a refused address, a vanished event)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    def __init__(
        self,
        config: Config,
        db: Database,
        box: SecretBox,
        *,
        clock: Callable[[], datetime] = utcnow,
        worker_id: str | None = None,
    ):
        self.config = config
        self.db = db
        self.box = box
        self.clock = clock
        self.worker_id = worker_id or new_worker_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- fan-out and claiming -----------------------------------------------------------

    def fan_out(self) -> int:
        """One fan-out pass (mta/webhook_fanout.py); the number of new events read."""
        return fan_out(self.db, self.config, self.clock())

    def prune(self, chunk: int = 1000) -> int:
        """Delete finished deliveries (and their attempts) last changed more than
        ``webhooks.keep_days`` ago, ``chunk`` at a time; the number deleted."""
        days = self.config.webhooks.keep_days
        if not days:
            return 0
        cutoff = self.clock() - timedelta(days=days)
        deleted = 0
        while True:
            with self.db.transaction() as s:
                ids = list(
                    s.scalars(
                        select(WebhookDelivery.id)
                        .where(
                            WebhookDelivery.status.in_((SUCCEEDED, FAILED)),
                            WebhookDelivery.updated_at < cutoff,
                        )
                        .limit(chunk)
                    )
                )
                if ids:
                    s.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids)))
                    s.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
            deleted += len(ids)
            if len(ids) < chunk:
                break
        if deleted:
            log.info("old webhook deliveries deleted", extra={"count": deleted})
        return deleted

    def claim(self, limit: int) -> list[Post | Attempt]:
        """Take up to ``limit`` due deliveries; nobody else posts them until the claim ends.

        As the delivery worker's claim: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and
        MariaDB, the write lock on SQLite, and due_at moved past the time the POSTs may
        take, so the deliveries of a process that died are taken up again after it.
        A delivery that cannot be posted at all comes back as its failed Attempt.
        """
        now = self.clock()
        c = self.config.webhooks
        with self.db.transaction() as s:
            query = (
                select(WebhookDelivery.id)
                .where(WebhookDelivery.due_at <= now, WebhookDelivery.status == PENDING)
                .order_by(WebhookDelivery.due_at)
                .limit(limit)
            )
            ids = list(s.scalars(self.db.skip_locked(query)))
            if not ids:
                return []
            rounds = math.ceil(len(ids) / c.concurrency)
            s.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(ids))
                .values(
                    claimed_by=self.worker_id,
                    due_at=now + timedelta(seconds=rounds * c.timeout + CLAIM_MARGIN),
                )
            )
            rows = s.execute(
                select(
                    WebhookDelivery.id,
                    WebhookDelivery.url,
                    WebhookDelivery.event_id,
                    WebhookDelivery.event_name,
                    WebhookDelivery.domain_id,
                ).where(WebhookDelivery.id.in_(ids))
            ).all()
            events = {
                e.id: e
                for e in s.scalars(select(Event).where(Event.id.in_({r.event_id for r in rows})))
            }
            keys = {
                domain_id: self.box.decrypt(encrypted)
                for domain_id, encrypted in s.execute(
                    select(Domain.id, Domain.signing_key_encrypted).where(
                        Domain.id.in_({r.domain_id for r in rows})
                    )
                )
            }
        out: list[Post | Attempt] = []
        for r in rows:
            event = events.get(r.event_id)
            if event is None or r.domain_id not in keys:
                out.append(Attempt(r.id, now, None, 0, "The event or its domain is gone", True))
            else:
                body = event_body(event, r.event_name)
                out.append(Post(r.id, r.url, event.uid, body, keys[r.domain_id]))
        return out

    # -- posting ------------------------------------------------------------------------

    async def post(self, client: httpx.AsyncClient, job: Post) -> Attempt:
        """POST one delivery, signed; never raises."""
        timeout = self.config.webhooks.timeout
        at = self.clock()
        started = time.monotonic()
        # The signature's time is the wall clock's: receivers compare it with their own.
        headers = {
            "Content-Type": "application/json",
            **signature_headers(job.signing_key, job.message_id, int(time.time()), job.body),
        }
        code: int | None = None
        error: str | None = None
        final = False
        try:
            async with (
                asyncio.timeout(timeout),
                client.stream("POST", job.url, content=job.body, headers=headers) as resp,
            ):
                code = resp.status_code
                if not 200 <= code < 300:
                    error = f"HTTP {code}" + await response_snippet(resp)
        except Refused as exc:
            error, final = f"Refused, not retried: {exc} (webhooks.allow_private is off)", True
        except (TimeoutError, httpx.TimeoutException):
            code, error = None, f"No answer within {timeout:g} s"
        except httpx.HTTPError as exc:
            code, error = None, f"{type(exc).__name__}: {exc}".rstrip(": ")
        except Exception as exc:  # noqa: BLE001 - recorded and retried, never dropped
            log.exception("webhook post failed", extra={"delivery": job.delivery_id})
            code, error = None, f"Internal error: {type(exc).__name__}"
        duration = int((time.monotonic() - started) * 1000)
        return Attempt(job.delivery_id, at, code, duration, error, final)

    async def post_all(self, jobs: list[Post | Attempt]) -> list[Attempt]:
        """Post every claimed delivery, at most ``webhooks.concurrency`` at once."""
        slots = asyncio.Semaphore(self.config.webhooks.concurrency)

        async def one(client: httpx.AsyncClient, job: Post | Attempt) -> Attempt:
            if isinstance(job, Attempt):
                return job
            async with slots:
                return await self.post(client, job)

        async with webhook_client(self.config) as client:
            return list(await asyncio.gather(*(one(client, j) for j in jobs)))

    # -- recording ----------------------------------------------------------------------

    def record(self, attempt: Attempt) -> None:
        """Log the attempt and decide what follows; a delivery no longer ours is left alone."""
        now = self.clock()
        schedule = self.config.webhooks.retry_schedule
        with self.db.transaction() as s:
            query = select(WebhookDelivery).where(
                WebhookDelivery.id == attempt.delivery_id,
                WebhookDelivery.claimed_by == self.worker_id,
                WebhookDelivery.status == PENDING,
            )
            if self.db.backend != "sqlite":
                query = query.with_for_update()
            delivery = s.scalar(query)
            if delivery is None:  # deleted with its webhook, or its claim ran out
                return
            error = attempt.error[:MAX_ERROR] if attempt.error else None
            s.add(
                WebhookAttempt(
                    delivery_id=delivery.id,
                    attempted_at=attempt.at,
                    status_code=attempt.status_code,
                    duration_ms=attempt.duration_ms,
                    error=error,
                )
            )
            delivery.attempts += 1
            delivery.last_status_code = attempt.status_code
            delivery.last_error = error
            delivery.claimed_by = None
            delivery.updated_at = now
            if attempt.ok:
                delivery.status, delivery.due_at = SUCCEEDED, None
            elif attempt.final or delivery.attempts > len(schedule):
                delivery.status, delivery.due_at = FAILED, None
                log.warning(
                    "webhook delivery failed",
                    extra={"delivery": delivery.id, "attempts": delivery.attempts, "error": error},
                )
            else:
                delay = schedule[delivery.attempts - 1] * random.uniform(0.9, 1.1)  # noqa: S311
                delivery.due_at = now + timedelta(seconds=delay)

    # -- running ------------------------------------------------------------------------

    def run_once(self) -> int:
        """Fan out, then claim, post and record one round; the number of POSTs made."""
        while self.fan_out() >= self.config.webhooks.batch_size:
            pass
        jobs = self.claim(self.config.webhooks.concurrency)
        if not jobs:
            return 0
        for attempt in asyncio.run(self.post_all(jobs)):
            self.record(attempt)
        return len(jobs)

    def start(self) -> None:
        """Run in a thread of its own until stop()."""
        self._thread = threading.Thread(target=self._run, name="postern-webhooks")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        log.info("webhook sender started", extra={"worker": self.worker_id})
        try:
            asyncio.run(self._serve())
        except Exception:  # pragma: no cover - _serve handles its own errors
            log.exception("webhook sender stopped on an error", extra={"worker": self.worker_id})
        log.info("webhook sender stopped", extra={"worker": self.worker_id})

    async def _serve(self) -> None:
        """Keep ``webhooks.concurrency`` POSTs in flight while there is work; on stop, finish
        the POSTs in hand and record them. Database work runs on one thread of its own, so
        the loop goes on with the POSTs meanwhile."""
        c = self.config.webhooks
        loop = asyncio.get_running_loop()
        database = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postern-webhooks-db")

        def in_db(fn: Callable, *args: Any) -> Awaitable:
            return loop.run_in_executor(database, fn, *args)

        async def deliver(client: httpx.AsyncClient, job: Post | Attempt) -> None:
            attempt = job if isinstance(job, Attempt) else await self.post(client, job)
            try:
                await in_db(self.record, attempt)
            except Exception:  # noqa: BLE001 - the claim runs out and the POST is made again
                log.exception("webhook attempt not recorded", extra={"delivery": job.delivery_id})

        in_flight: set[asyncio.Task] = set()
        next_fan_out = 0.0
        next_prune = time.monotonic() + PRUNE_EVERY / 10
        try:
            async with webhook_client(self.config) as client:
                while not self._stop.is_set():
                    busy = False
                    try:
                        if time.monotonic() >= next_fan_out:
                            read = await in_db(self.fan_out)
                            busy = read >= c.batch_size
                            next_fan_out = time.monotonic() + (0 if busy else c.poll_interval)
                        if time.monotonic() >= next_prune:
                            next_prune = time.monotonic() + PRUNE_EVERY
                            await in_db(self.prune)
                        free = c.concurrency - len(in_flight)
                        jobs = await in_db(self.claim, free) if free > 0 else []
                    except Exception:  # noqa: BLE001 - a database hiccup must not end the sender
                        log.exception("webhook sender loop error", extra={"worker": self.worker_id})
                        jobs = []
                    for job in jobs:
                        task = asyncio.create_task(deliver(client, job))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                    if busy or (jobs and len(jobs) == free):
                        continue
                    if in_flight:
                        await asyncio.wait(
                            in_flight, timeout=c.poll_interval, return_when=asyncio.FIRST_COMPLETED
                        )
                    else:
                        await asyncio.sleep(c.poll_interval)
                if in_flight:
                    await asyncio.wait(in_flight)
        finally:
            database.shutdown()
