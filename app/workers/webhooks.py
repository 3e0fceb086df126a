"""The webhook sender: claims due webhook deliveries, posts them signed, records each attempt.

It runs in every ``postern worker`` (and so in ``postern serve``), on a thread of its own, in
the workers' shared loop (app/workers/runner.py): each round fans new events out into
deliveries, claims up to ``webhooks.concurrency`` due deliveries, posts them all at once with
httpx on the thread's own asyncio loop, and records each attempt in a transaction of its
own. The database work is the gateway's (commands/webhooks/queue.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import httpx

from app import metrics
from app.workers.runner import Runner, new_worker_id
from app.workers.webhook_client import Refused, response_snippet, webhook_client
from commands.domains.rotation import housekeeping as dkim_housekeeping
from commands.housekeeping import sweep
from commands.webhooks.fanout import fan_out
from commands.webhooks.payload import signature_headers
from commands.webhooks.postal import PostalSigner, SignerCache
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
from models.webhooks import PENDING

log = logging.getLogger("postern.webhooks")

CLAIM_MARGIN = 60  # seconds a claim outlasts the POSTs it was made for
# Seconds between deletions of old finished deliveries, and of expired sessions and
# idempotency records (commands/housekeeping.py), and of DKIM key rotation's steps
# (commands/domains/rotation.py).
PRUNE_EVERY = 3600


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
        self._thread: threading.Thread | None = None
        self._aio: tuple[asyncio.Runner, httpx.AsyncClient] | None = None  # while it runs
        self._next_prune = time.monotonic() + PRUNE_EVERY / 10
        self._postal_keys = SignerCache()
        c = config.webhooks
        self.runner: Runner[Post | Attempt, Attempt] = Runner(
            self,
            batch_size=c.concurrency,
            poll_interval=c.poll_interval,
            log=log,
            worker_id=self.worker_id,
            name="webhooks",
        )

    # -- the queue (commands/webhooks/) ---------------------------------------------------

    def fan_out(self) -> int:
        """One fan-out pass (commands/webhooks/fanout.py); the number of new events read."""
        return fan_out(self.db, self.config, self.clock())

    def prune(self, chunk: int = 1000) -> int:
        """Delete finished deliveries older than ``webhooks.keep_days``; the number deleted."""
        return prune_deliveries(
            self.db, now=self.clock(), keep_days=self.config.webhooks.keep_days, chunk=chunk
        )

    def dkim_housekeeping(self) -> None:
        """DKIM key rotation's periodic steps (commands/domains/rotation.py); a failure is
        logged, and the next run tries again."""
        try:
            dkim_housekeeping(self.db, self.box, self.config, self.clock())
        except Exception:  # noqa: BLE001 - the webhooks go on
            log.exception("DKIM key housekeeping failed")

    def postal_signer(self) -> PostalSigner:
        """The key of Postal-format webhooks (made at its first need; see SignerCache)."""
        return self._postal_keys.get(self.db, self.box, self.config)

    def claim_due(self, limit: int) -> list[Post | Attempt]:
        """Take up to ``limit`` due deliveries (see ``claim``)."""
        c = self.config.webhooks
        rounds = max(1, math.ceil(limit / c.concurrency))
        return claim_deliveries(
            self.db,
            self.box,
            worker_id=self.worker_id,
            now=self.clock(),
            limit=limit,
            hold=timedelta(seconds=rounds * c.timeout + CLAIM_MARGIN),
            per_webhook=c.concurrency_per_webhook,
            per_user=c.concurrency_per_user,
            postal_signer=self.postal_signer,
        )

    def record(self, attempt: Attempt) -> Recorded | None:
        """Record the attempt and what follows; None for a delivery no longer ours."""
        return record_attempt(
            self.db,
            attempt,
            worker_id=self.worker_id,
            now=self.clock(),
            retry_schedule=self.config.webhooks.retry_schedule,
            disable_after=timedelta(days=self.config.webhooks.disable_after_days) or None,
        )

    def record_safely(self, attempt: Attempt) -> None:
        """``record``, logging its failure: the claim runs out and the POST is made again."""
        try:
            recorded = self.record(attempt)
        except Exception:  # noqa: BLE001 - one delivery's record must not stop the others'
            log.exception("webhook attempt not recorded", extra={"delivery": attempt.delivery_id})
            return
        if recorded is not None:
            metrics.webhook_posted(
                "succeeded"
                if attempt.ok
                else "retrying"
                if recorded.status == PENDING
                else "failed"
            )

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
            signed = job.headers
            if signed is None:
                signed = signature_headers(
                    job.signing_key, job.message_id, int(time.time()), job.body
                )
            headers = {"Content-Type": "application/json", **signed}
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

    async def post_all(
        self, jobs: Sequence[Post | Attempt], client: httpx.AsyncClient | None = None
    ) -> list[Attempt]:
        """Post every claimed delivery, at most ``webhooks.concurrency`` at once, with
        ``client`` (or a client of this call's own)."""
        if client is None:
            async with webhook_client(self.config) as own:
                return await self.post_all(jobs, own)
        slots = asyncio.Semaphore(self.config.webhooks.concurrency)

        async def one(job: Post | Attempt) -> Attempt:
            if isinstance(job, Attempt):
                return job
            async with slots:
                return await self.post(client, job)

        return list(await asyncio.gather(*(one(j) for j in jobs)))

    # -- running (the runner's Batches) ----------------------------------------------------

    def claim(self, limit: int) -> list[Post | Attempt]:
        """Fan new events out, delete old deliveries when it is time, and take up to ``limit``
        due deliveries; nobody else posts them until the claim ends.

        The claim lasts as long as the POSTs may take (``limit`` of them,
        ``webhooks.concurrency`` at a time) and a margin. A delivery that cannot be posted
        comes back as its failed Attempt, and the others are posted.
        """
        try:
            while self.fan_out() >= self.config.webhooks.batch_size:
                pass
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + PRUNE_EVERY
                self.prune()
                sweep(self.db, self.config, self.clock())
                self.dkim_housekeeping()
        except Exception:  # noqa: BLE001 - deliveries already made are still posted
            log.exception("webhook fan-out failed", extra={"worker": self.worker_id})
        return self.claim_due(limit)

    def handle(self, items: Sequence[Post | Attempt]) -> list[Attempt]:
        """Post the claimed deliveries, at most ``webhooks.concurrency`` at once; an attempt
        for each (a delivery that could not be prepared keeps its own)."""
        if self._aio is None:  # outside the running thread: a loop and a client for this call
            return asyncio.run(self.post_all(items))
        aio, client = self._aio
        return aio.run(self.post_all(items, client))

    def failed(self, item: Post | Attempt, error: BaseException) -> Attempt:
        """The attempt of a delivery whose batch could not be posted."""
        if isinstance(item, Attempt):
            return item
        return internal_error(item.delivery_id, self.clock(), "posting", error)

    def commit(self, outcomes: Sequence[Attempt]) -> None:
        """Record each attempt in a transaction of its own: one that cannot be recorded is
        posted again when its claim runs out, and the others are recorded."""
        for attempt in outcomes:
            self.record_safely(attempt)

    def run_once(self) -> int:
        """Fan out, then claim, post and record one round; the number of deliveries handled."""
        return self.runner.run_once()

    def start(self) -> None:
        """Run in a thread of its own until stop()."""
        self._thread = threading.Thread(target=self._run, name="postern-webhooks")
        self._thread.start()

    def stop(self) -> None:
        """Stop after the round in hand (its POSTs are finished and recorded)."""
        self.runner.stop()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        """The runner's loop, with an asyncio loop and an HTTP client kept for its whole life
        (connections to receivers are kept alive from one round to the next)."""
        log.info("webhook sender started", extra={"worker": self.worker_id})
        with asyncio.Runner() as aio:
            client = webhook_client(self.config)
            self._aio = (aio, client)
            try:
                self.runner.run()
            finally:
                self._aio = None
                aio.run(client.aclose())
        log.info("webhook sender stopped", extra={"worker": self.worker_id})
