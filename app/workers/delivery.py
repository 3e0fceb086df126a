"""The delivery worker: claims due deliveries, builds and sends each, records every outcome.

The steps are the gateway's (commands/delivery: ``claim_batch``, ``prepare_batch`` and
``build_and_sign``, ``record_outcomes``); this worker runs them in the shared loop
(app/workers/runner.py) and does the sending. Each message is built just before it is sent,
on a thread of its own (or on the build processes when a backlog is being worked through),
so builds overlap sending and a batch holds few built messages at once. An error building
one message is that message's outcome alone ("error"); its batch-mates are sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from app.workers.runner import Runner, new_worker_id
from commands.delivery.build import (
    BuildJob,
    Outgoing,
    TrackingURLs,
    build_and_sign,
    describe,
    prepare_batch,
)
from commands.delivery.outcomes import ERROR_CODE, Result, Retry, record_outcomes, retry_delay
from commands.delivery.queue import Claimed, claim_batch
from commands.domains.dns_records import make_resolver, tracking_host
from core.clock import utcnow
from core.crypto import SecretBox
from core.settings import Config
from models import Database
from mta import mx
from mta.eventloop import new_event_loop
from mta.smtp_client import ClientSettings, Envelope, Outcome, deliver
from mta.verp import verp_address

__all__ = ["Worker", "new_worker_id", "retry_delay", "verp_address"]

log = logging.getLogger("postern.worker")

# The share of ``delivery.claim_timeout`` a batch's SMTP work may take: what is left at the
# deadline is deferred, long before the claim runs out and another worker could take it.
DEADLINE_SHARE = 0.5
PROCESS_BUILDS_FROM = 8  # builds in a full batch worth handing to the build processes


def _exit_with_parent(parent: int) -> None:
    """In a build process: end when the worker that started it is gone (killed with SIGKILL,
    it cannot shut its pool down), instead of lingering as an orphan."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@dataclass(frozen=True)
class Send:
    """One delivery to send, with its message built on demand (awaited once)."""

    ref: int
    recipient_domain: str
    mail_from: str
    rcpt_to: str
    build: Callable[[], Awaitable[bytes]]


class _SharedBuild:
    """One build awaited by several deliveries (an untracked message's recipients): made
    once, and let go when the last of them has it."""

    def __init__(self, job: BuildJob, users: int):
        self.job = job
        self.users = users
        self.task: asyncio.Future[bytes] | None = None


class Worker:
    """The delivery worker; ``run`` works until ``stop``, ``run_once`` does one batch."""

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
        self.resolver = make_resolver(config)
        self.runner = Runner(
            self,
            batch_size=config.delivery.batch_size,
            poll_interval=config.delivery.poll_interval,
            log=log,
            worker_id=self.worker_id,
        )
        self._pool: ProcessPoolExecutor | None = None  # the build processes, when started
        self._builder: ThreadPoolExecutor | None = None  # builds in this process
        # One event loop for every batch: a new one each time (asyncio.run) cost more than
        # a small batch's sending, and its default executor started new threads each time.
        self._loop: asyncio.Runner | None = None
        self._backlog = False  # whether the batch in hand is full (more may be waiting)

    # -- the runner's steps -------------------------------------------------------------

    def claim(self, limit: int | None = None) -> list[Claimed]:
        """Take up to ``limit`` due deliveries (a batch); nobody else takes them until the
        claim ends (``delivery.claim_timeout``)."""
        c = self.config.delivery
        return claim_batch(
            self.db, self.worker_id, limit or c.batch_size, self.clock(), c.claim_timeout
        )

    def handle(self, claimed: Sequence[Claimed]) -> list[Result]:
        """Build and send every claimed delivery; one result each."""
        self._backlog = len(claimed) >= self.config.delivery.batch_size
        urls = TrackingURLs(
            self.config.tracking.base_url, self.config.http.public_url, tracking_host
        )
        ready, results = prepare_batch(self.db, self.box, claimed, urls)
        deadline = time.monotonic() + self.config.delivery.claim_timeout * DEADLINE_SHARE
        if ready:
            outcomes = self._run_async(self._send(ready, deadline))
            results += [
                Result(cast(int, o.ref), o.status, o.code, o.enhanced, o.text, o.host)
                for o in outcomes
            ]
        for r in results:
            if r.status == "error":
                log.error(
                    "delivery failed unexpectedly",
                    extra={"worker": self.worker_id, "delivery": r.delivery_id, "error": r.text},
                )
        return results

    def failed(self, item: Claimed, error: BaseException) -> Result:
        """A batch that could not be handled (the database, say): deferred, not held."""
        text = f"Internal error while sending: {type(error).__name__}"
        return Result(item.delivery_id, "deferred", None, ERROR_CODE, text)

    def commit(self, results: Sequence[Result]) -> None:
        c = self.config.delivery
        retry = Retry(c.max_age, c.retry_base, c.retry_max)
        record_outcomes(self.db, self.worker_id, results, self.clock(), retry)

    # -- running --------------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim one batch and see it through; the number of deliveries handled."""
        return self.runner.run_once()

    def run(self) -> None:
        """Work until stop() is called; the batch in hand is finished first."""
        try:
            self.runner.run()
        finally:
            self.close()

    def stop(self) -> None:
        self.runner.stop()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the build processes and thread and the event loop, if started."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._builder is not None:
            self._builder.shutdown()
            self._builder = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _run_async(self, coroutine: Awaitable[list[Outcome]]) -> list[Outcome]:
        if self._loop is None:
            self._loop = asyncio.Runner(loop_factory=new_event_loop)
        return self._loop.run(coroutine)  # type: ignore[arg-type]

    # -- building -------------------------------------------------------------------------

    def lazy_builds(self, ready: Sequence[Outgoing]) -> list[Send]:
        """Each delivery with its build, made when first awaited: a message's untracked
        recipients share one build, a tracked message is built per recipient."""
        users: dict[int, int] = defaultdict(int)
        for o in ready:
            users[id(o.job)] += 1
        shared: dict[int, _SharedBuild] = {}
        sends = []
        for o in ready:
            if users[id(o.job)] > 1:
                entry = shared.get(id(o.job))
                if entry is None:
                    entry = shared[id(o.job)] = _SharedBuild(o.job, users[id(o.job)])
                build = self._shared_build(entry)
            else:
                build = self._one_build(o.job)
            sends.append(Send(o.delivery_id, o.recipient_domain, o.mail_from, o.rcpt_to, build))
        return sends

    def _one_build(self, job: BuildJob) -> Callable[[], Awaitable[bytes]]:
        async def build() -> bytes:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor(), build_and_sign, job
            )

        return build

    def _shared_build(self, entry: _SharedBuild) -> Callable[[], Awaitable[bytes]]:
        async def build() -> bytes:
            if entry.task is None:
                entry.task = asyncio.get_running_loop().run_in_executor(
                    self._executor(), build_and_sign, entry.job
                )
            task = entry.task
            entry.users -= 1
            if entry.users == 0:
                entry.task = None  # the last recipient holds the message now
            return await task

        return build

    def _executor(self) -> Executor:
        """The build processes while a backlog is worked through (handing a build to another
        process costs about as much CPU again as the build), else a thread of this one."""
        processes = self.config.delivery.build_processes or os.cpu_count() or 1
        if processes > 1 and self._backlog:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_with_parent,
                    initargs=(os.getpid(),),
                )
            return self._pool
        if self._builder is None:
            self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postern-build")
        return self._builder

    # -- sending --------------------------------------------------------------------------

    async def _send(self, ready: Sequence[Outgoing], deadline: float) -> list[Outcome]:
        """Send every delivery: grouped by recipient domain, over reused connections."""
        sends = self.lazy_builds(ready)
        by_domain: dict[str, list[Envelope]] = defaultdict(list)
        outcomes: list[Outcome] = []
        for s in sends:
            try:
                data = await s.build()
            except Exception as exc:  # noqa: BLE001 - this delivery's outcome alone
                outcomes.append(Outcome(s.ref, "error", None, None, describe(exc), None))
                continue
            key = "" if self.config.delivery.smarthost else s.recipient_domain
            by_domain[key].append(Envelope(s.mail_from, s.rcpt_to, data, s.ref))
        per_host = self.config.delivery.concurrency_per_host
        host_slots: dict[tuple[str, ...], asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(per_host)
        )
        results = await asyncio.gather(
            *(self._send_domain(domain, group, host_slots) for domain, group in by_domain.items())
        )
        return outcomes + [outcome for group in results for outcome in group]

    def client_settings(self, port: int) -> ClientSettings:
        c = self.config.delivery
        timeout = c.timeout
        if c.smarthost:
            tls = {"starttls": "required", "implicit": "implicit", "none": "none"}[c.smarthost_tls]
            return ClientSettings(
                helo_name=self.config.smtp.hostname,
                port=c.smarthost_port,
                tls=tls,
                username=c.smarthost_username or None,
                password=c.smarthost_password or None,
                connect_timeout=timeout,
                command_timeout=timeout,
                data_timeout=timeout * 10,
            )
        return ClientSettings(
            helo_name=self.config.smtp.hostname,
            port=port,
            tls=c.tls,
            connect_timeout=timeout,
            command_timeout=timeout,
            data_timeout=timeout * 10,
        )

    async def _send_domain(
        self,
        domain: str,
        group: list[Envelope],
        host_slots: dict[tuple[str, ...], asyncio.Semaphore],
    ) -> list[Outcome]:
        c = self.config.delivery
        try:
            if c.smarthost:
                addresses = await asyncio.to_thread(
                    mx.resolve_addresses, c.smarthost, self.resolver
                )
            else:
                hosts = await asyncio.to_thread(mx.resolve_mx, domain, self.resolver)
                addresses = []
                for host in hosts:
                    try:
                        addresses += await asyncio.to_thread(
                            mx.resolve_addresses, host, self.resolver
                        )
                    except mx.RouteError:
                        continue
                if not addresses:
                    raise mx.TemporaryDNSError(f"No address found for the MX hosts of {domain}")
        except mx.RouteError as exc:
            status = "bounced" if exc.permanent else "deferred"
            return [
                Outcome(e.ref, status, None, "5.1.2" if exc.permanent else "4.4.3", str(exc), None)
                for e in group
            ]
        settings = self.client_settings(c.mx_port)
        # Several connections share a large group; each reuses its connection for its share.
        connections = min(c.concurrency_per_host, max(1, math.ceil(len(group) / 20)))
        slices = [group[i::connections] for i in range(connections)]
        slot = host_slots[tuple(addresses)]

        async def one(envs: list[Envelope]) -> list[Outcome]:
            async with slot:
                return await deliver(addresses, envs, settings)

        results = await asyncio.gather(*(one(s) for s in slices if s))
        return [o for r in results for o in r]
