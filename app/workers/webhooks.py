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
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import httpx

from app.workers.delivery import new_worker_id
from app.workers.webhook_client import Refused, response_snippet, webhook_client
from commands.webhooks.fanout import fan_out
from commands.webhooks.payload import signature_headers
from commands.webhooks.queue import (
    Attempt,
    Post,
    Recorded,
    claim_deliveries,
    internal_error,
    prune_deliveries,
    record_attempt,
)
from core.clock import utcnow
from core.crypto import SecretBox
from core.settings import Config
from models import Database

log = logging.getLogger("postern.webhooks")

CLAIM_MARGIN = 60  # seconds a claim outlasts the POSTs it was made for
PRUNE_EVERY = 3600  # seconds between deletions of old finished deliveries


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

    # -- the queue (commands/webhooks/) ---------------------------------------------------

    def fan_out(self) -> int:
        """One fan-out pass (commands/webhooks/fanout.py); the number of new events read."""
        return fan_out(self.db, self.config, self.clock())

    def prune(self, chunk: int = 1000) -> int:
        """Delete finished deliveries older than ``webhooks.keep_days``; the number deleted."""
        return prune_deliveries(
            self.db, now=self.clock(), keep_days=self.config.webhooks.keep_days, chunk=chunk
        )

    def claim(self, limit: int) -> list[Post | Attempt]:
        """Take up to ``limit`` due deliveries; nobody else posts them until the claim ends.

        The claim lasts as long as the POSTs may take (``limit`` of them,
        ``webhooks.concurrency`` at a time) and a margin. A delivery that cannot be posted
        comes back as its failed Attempt, and the others are posted.
        """
        c = self.config.webhooks
        rounds = max(1, math.ceil(limit / c.concurrency))
        return claim_deliveries(
            self.db,
            self.box,
            worker_id=self.worker_id,
            now=self.clock(),
            limit=limit,
            hold=timedelta(seconds=rounds * c.timeout + CLAIM_MARGIN),
        )

    def record(self, attempt: Attempt) -> Recorded | None:
        """Record the attempt and what follows; None for a delivery no longer ours."""
        return record_attempt(
            self.db,
            attempt,
            worker_id=self.worker_id,
            now=self.clock(),
            retry_schedule=self.config.webhooks.retry_schedule,
        )

    def record_safely(self, attempt: Attempt) -> None:
        """``record``, logging its failure: the claim runs out and the POST is made again."""
        try:
            self.record(attempt)
        except Exception:  # noqa: BLE001 - one delivery's record must not stop the others'
            log.exception("webhook attempt not recorded", extra={"delivery": attempt.delivery_id})

    # -- posting ------------------------------------------------------------------------

    async def post(self, client: httpx.AsyncClient, job: Post) -> Attempt:
        """POST one delivery, signed; never raises."""
        timeout = self.config.webhooks.timeout
        at = self.clock()
        started = time.monotonic()
        code: int | None = None
        error: str | None = None
        final = False
        doing = "signing the POST"
        try:
            # The signature's time is the wall clock's: receivers compare it with their own.
            headers = {
                "Content-Type": "application/json",
                **signature_headers(job.signing_key, job.message_id, int(time.time()), job.body),
            }
            doing = "posting"
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
            duration = int((time.monotonic() - started) * 1000)
            return internal_error(job.delivery_id, at, doing, exc, duration)
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

    # -- running ------------------------------------------------------------------------

    def run_once(self) -> int:
        """Fan out, then claim, post and record one round; the number of POSTs made."""
        while self.fan_out() >= self.config.webhooks.batch_size:
            pass
        jobs = self.claim(self.config.webhooks.concurrency)
        if not jobs:
            return 0
        for attempt in asyncio.run(self.post_all(jobs)):
            self.record_safely(attempt)
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

        def in_db(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
            return loop.run_in_executor(database, fn, *args)

        async def deliver(client: httpx.AsyncClient, job: Post | Attempt) -> None:
            attempt = job if isinstance(job, Attempt) else await self.post(client, job)
            await in_db(self.record_safely, attempt)

        in_flight: set[asyncio.Task[None]] = set()
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
