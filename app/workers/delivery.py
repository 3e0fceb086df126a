"""The delivery worker: claims due deliveries, builds and sends each, records every outcome.

The steps are the gateway's (commands/delivery: ``claim_batch``, ``prepare_batch`` and
``build_and_sign``, ``record_outcomes``); this worker runs them in the shared loop
(app/workers/runner.py) and sends through ``dispatch`` (app/workers/dispatch.py), by a
deadline well inside the claim. Each message is built just before it is sent,
on a thread of its own (or on the build processes when a backlog is being worked through),
so builds overlap sending and a batch holds few built messages at once. An error building
one message is that message's outcome alone ("error"); its batch-mates are sent.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from app import metrics
from app.workers.dispatch import Outgoing, dispatch
from app.workers.runner import Runner, new_worker_id
from commands.delivery.build import (
    BuildJob,
    Prepared,
    TrackingURLs,
    build_and_sign,
    prepare_batch,
)
from commands.delivery.outcomes import (
    ERROR_CODE,
    Result,
    Retry,
    SoftRule,
    record_outcomes,
    retry_delay,
)
from commands.delivery.queue import Claimed, claim_batch
from commands.domains.dns_records import make_resolver, tracking_host
from commands.health import Heartbeat
from core.clock import utcnow
from core.crypto import SecretBox
from core.settings import Config
from models import Database
from models.payload import Submitted
from mta.eventloop import new_event_loop
from mta.smtp_client import Outcome
from mta.verp import verp_address

__all__ = ["Worker", "new_worker_id", "retry_delay", "verp_address"]

log = logging.getLogger("postern.worker")

# The share of ``delivery.claim_timeout`` a batch's SMTP work may take: what is left at the
# deadline is deferred, long before the claim runs out and another worker could take it.
DEADLINE_SHARE = 0.5
_BROKEN_POOL = f"{BrokenProcessPool.__name__}:"  # how dispatch describes a build pool's death
# A batch whose messages come to less than this, built, is built whole before its sending
# begins (the build processes take it in chunks, as one hand-over each); a larger one is
# built message by message as it is sent, so that memory stays bounded. Handing builds to
# the processes one at a time cost about 1.2 ms of CPU more per delivery (bench/send_bench).
EAGER_BYTES = 8 * 1024 * 1024


def _exit_with_parent(parent: int) -> None:
    """In a build process: end when the worker that started it is gone (killed with SIGKILL,
    it cannot shut its pool down), instead of lingering as an orphan."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _built_size(job: BuildJob) -> int:
    """About how large ``job``'s message is once built (its HTML, the plain part derived
    from it, attachments, headers and signature)."""
    p = job.payload
    if isinstance(p, Submitted):
        return len(p.data) + 1024
    content = len(p.html or "") + len(p.text or "") + sum(len(a.content) for a in p.attachments)
    return 2 * content + 4096


def _built_or_error(job: BuildJob) -> bytes | Exception:
    """``job``'s message, or what stopped it being built (that message's error alone)."""
    try:
        return build_and_sign(job)
    except Exception as exc:  # noqa: BLE001 - handed back as that delivery's outcome
        return exc


def _ready(built: bytes | Exception) -> Callable[[], Awaitable[bytes]]:
    """A build whose result is already known."""

    async def build() -> bytes:
        if isinstance(built, Exception):
            raise built
        return built

    return build


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
        self.heartbeat = Heartbeat(db, clock)  # /readyz: a delivery worker is running
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
        self.heartbeat.beat()
        c = self.config.delivery
        return claim_batch(
            self.db, self.worker_id, limit or c.batch_size, self.clock(), c.claim_timeout
        )

    def handle(self, claimed: Sequence[Claimed]) -> list[Result]:
        """Build and send every claimed delivery; one result each."""
        deadline = time.monotonic() + self.config.delivery.claim_timeout * DEADLINE_SHARE
        self._backlog = len(claimed) >= self.config.delivery.batch_size
        if self._backlog and self._processes() > 1:
            self._start_pool()
        urls = TrackingURLs(
            self.config.tracking.base_url, self.config.http.public_url, tracking_host
        )
        ready, results = prepare_batch(self.db, self.box, claimed, urls)
        if ready:
            sends = self.builds(ready)
            outcomes = self._run_async(
                dispatch(sends, self.config, self.resolver, deadline=deadline)
            )
            results += [
                Result(
                    cast(int, o.ref),
                    o.status,
                    o.code,
                    o.enhanced,
                    o.text,
                    o.host,
                    tls=o.tls,
                    seconds=o.seconds,
                )
                for o in outcomes
            ]
        if any(r.status == "error" and r.text.startswith(_BROKEN_POOL) for r in results):
            # A build process died (killed, out of memory): not those messages' fault. They
            # are deferred like any temporary failure, and the pool is started afresh.
            results = [
                replace(r, status="deferred", enhanced=ERROR_CODE)
                if r.status == "error" and r.text.startswith(_BROKEN_POOL)
                else r
                for r in results
            ]
            self._drop_pool()
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
        soft = SoftRule(c.soft_bounce_limit, c.soft_bounce_days)
        metrics.deliveries_recorded(
            record_outcomes(self.db, self.worker_id, results, self.clock(), retry, soft)
        )

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

    def _run_async(self, coroutine: Coroutine[Any, Any, list[Outcome]]) -> list[Outcome]:
        if self._loop is None:
            self._loop = asyncio.Runner(loop_factory=new_event_loop)
        return self._loop.run(coroutine)

    # -- building -------------------------------------------------------------------------

    def builds(self, ready: Sequence[Prepared]) -> list[Outgoing]:
        """Each delivery with its build: made beforehand for a batch of small messages,
        else lazily (``lazy_builds``)."""
        jobs = list({id(o.job): o.job for o in ready}.values())
        if sum(_built_size(j) for j in jobs) >= EAGER_BYTES:
            return self.lazy_builds(ready)
        if self._backlog and self._processes() > 1 and len(jobs) >= 8:
            chunk = max(1, len(jobs) // (self._processes() * 4))
            try:
                built = list(self._start_pool().map(_built_or_error, jobs, chunksize=chunk))
            except BrokenProcessPool:  # a build process died: build as the sending goes
                self._drop_pool()
                return self.lazy_builds(ready)
        else:
            built = [_built_or_error(j) for j in jobs]
        by_job = {id(j): b for j, b in zip(jobs, built, strict=True)}
        return [
            Outgoing(
                o.delivery_id, o.recipient_domain, o.mail_from, o.rcpt_to, _ready(by_job[id(o.job)])
            )
            for o in ready
        ]

    def lazy_builds(self, ready: Sequence[Prepared]) -> list[Outgoing]:
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
            sends.append(Outgoing(o.delivery_id, o.recipient_domain, o.mail_from, o.rcpt_to, build))
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
            return await asyncio.shield(task)  # one recipient given up on is not all

        return build

    def _executor(self) -> Executor:
        """The build processes while a backlog is worked through (handing a build to another
        process costs about as much CPU again as the build), else a thread of this one."""
        if self._backlog and self._processes() > 1:
            return self._start_pool()
        if self._builder is None:
            self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postern-build")
        return self._builder

    def _drop_pool(self) -> None:
        """Let go of build processes that broke; the next backlog starts them afresh."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _processes(self) -> int:
        return int(self.config.delivery.build_processes or os.cpu_count() or 1)

    def _start_pool(self) -> ProcessPoolExecutor:
        """The build processes, started (each a new interpreter importing Postern, which
        takes a while) as soon as a backlog is seen, so that their start overlaps the MX
        look-ups and connections rather than holding up the first builds."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._processes(),
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
            for _ in range(self._processes()):  # processes start as work arrives
                self._pool.submit(os.getpid)
        return self._pool
