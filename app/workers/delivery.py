"""The delivery worker: claim due deliveries, build and sign, send to MX hosts, record outcomes."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import multiprocessing
import os
import random
import re
import socket
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, select, update

from app.workers.dispatch import Outgoing, dispatch
from commands.domains.dns_records import make_resolver, tracking_host
from commands.events import writer as events
from commands.suppression import suppress_bounce
from core.clock import utcnow
from core.crypto import SecretBox
from core.settings import Config
from models import Database, Delivery, DKIMKey, Domain, Message
from models.direct import Direct
from models.messages import (
    BOUNCED,
    DEFERRED,
    DELIVERED,
    FAILED,
    SENDING,
    raw_message,
    submitted_whole,
    unpack_payload,
)
from mta import tracking
from mta.eventloop import new_event_loop
from mta.message import Address, Attachment, MessageSpec, build_message
from mta.signing import SigningKey, sign_message
from mta.smtp_client import Build, Envelope, Outcome
from mta.verp import verp_address

log = logging.getLogger("postern.worker")


@dataclass(frozen=True)
class BuildJob:
    """What building and signing one message needs, as plain data (it may cross processes)."""

    payload: dict[str, Any]  # as unpack_payload gives it
    tags: str
    message_id: str
    domain_name: str
    subdomain: str
    created_at: datetime
    keys: list[tuple[str, str, bytes]]  # (selector, algorithm, private PEM)
    track: tracking.Tracking | None = None  # set: the message to one recipient, tracked


def _exit_with_parent(parent: int) -> None:
    """In a build process: end when the worker that started it is gone (killed with SIGKILL,
    it cannot shut its pool down), instead of lingering as an orphan."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def build_and_sign(b: BuildJob) -> bytes:
    """The complete message, DKIM-signed with each of the domain's keys."""
    p = b.payload
    signing_domain = f"{b.subdomain}.{b.domain_name}"
    keys = [SigningKey(signing_domain, sel, alg, pem) for sel, alg, pem in b.keys]
    raw = raw_message(p)
    if raw is not None:  # submitted over SMTP, complete already
        return sign_message(prepare_raw(raw, b), keys)

    def addresses(items):
        return [Address(a["email"], a.get("name", "")) for a in items]

    html, text, extra = p["html"], p["text"], {}
    if b.track is not None:
        html, text, extra = tracking.apply(b.track, html, text)

    spec = MessageSpec(
        sender=Address(p["from"]["email"], p["from"].get("name", "")),
        to=addresses(p["to"]),
        cc=addresses(p["cc"]),
        reply_to=addresses(p["reply_to"]),
        subject=p["subject"],
        html=html,
        text=text,
        attachments=[
            Attachment(
                a["filename"],
                base64.b64decode(a["content"]),
                a["type"],
                a["disposition"],
                a["contentid"],
            )
            for a in p["attachments"]
        ],
        headers=p["headers"],
        tags=json.loads(b.tags),
        message_id=f"<{b.message_id}@{b.domain_name}>",
        date=b.created_at,
        extra_headers=extra,
    )
    return sign_message(build_message(spec), keys)


def prepare_raw(data: bytes, b: BuildJob) -> bytes:
    """A submitted message made ready to sign: CRLF lines, no Bcc, Message-ID and Date."""
    if data.count(b"\n") != data.count(b"\r\n"):  # a bare LF somewhere
        data = re.sub(rb"\r?\n", b"\r\n", data)
    head, sep, body = data.partition(b"\r\n\r\n")
    lines: list[bytes] = []
    skipping = False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                lines.append(line)
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            lines.append(line)
    names = {ln.split(b":", 1)[0].strip().lower() for ln in lines if b":" in ln}
    if b"message-id" not in names:
        lines.insert(0, f"Message-ID: <{b.message_id}@{b.domain_name}>".encode())
    if b"date" not in names:
        lines.insert(0, f"Date: {format_datetime(b.created_at)}".encode())
    return b"\r\n".join(lines) + (sep or b"\r\n\r\n") + body


@dataclass
class Job:
    """A claimed delivery with what is needed to send it."""

    delivery_id: int
    token: str
    recipient: str
    recipient_domain: str
    message_id: str
    domain_id: int
    created_at: datetime


def _ready(data: bytes | Build) -> Build:
    """A build that gives an already built message."""

    async def build() -> bytes:
        return data if isinstance(data, bytes) else await data()

    return build


def retry_delay(attempts: int, base: int, cap: int) -> float:
    """Exponential backoff with +-20% jitter: base, 2 base, 4 base ... at most cap."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not secrecy


def new_worker_id() -> str:
    """What marks the claims of one worker process: host, process id and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


# Claiming: the due deliveries' ids (a statement per batch size, built by the worker: on
# PostgreSQL and MariaDB it skips rows locked by another), then these two.
_CLAIM = Direct(
    update(Delivery)
    .where(Delivery.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=SENDING,
        claimed_by=bindparam("worker"),
        attempts=Delivery.attempts + 1,
        due_at=bindparam("until"),
        updated_at=bindparam("now"),
    )
)
_CLAIMED = Direct(
    select(
        Delivery.id.label("delivery_id"),
        Delivery.token,
        Delivery.recipient,
        Delivery.recipient_domain,
        Delivery.message_id,
        Delivery.domain_id,
        Delivery.created_at,
    ).where(Delivery.id.in_(bindparam("ids", expanding=True)))
)
# What recording an outcome reads of a claimed delivery and its message (not the payload),
# named so that a row also reads as the message an event takes (id is the message's).
_OURS = Direct(
    select(
        Delivery.id.label("delivery_id"),
        Delivery.user_id,
        Delivery.recipient,
        Delivery.attempts,
        Delivery.created_at,
        Message.id,
        Message.domain_id,
        Message.domain_name,
        Message.tags,
    )
    .join(Message, Message.id == Delivery.message_id)
    .where(
        Delivery.id.in_(bindparam("ids", expanding=True)),
        Delivery.claimed_by == bindparam("worker"),
        Delivery.status == SENDING,
    )
)
# What building reads: the messages of a batch, their domains and the domains' DKIM keys.
_MESSAGES = Direct(
    select(Message.id, Message.payload, Message.tags, Message.created_at).where(
        Message.id.in_(bindparam("ids", expanding=True))
    )
)
# A domain's row once per key (once with no key), in one statement: both read at one time.
_DOMAIN_KEYS = Direct(
    select(
        Domain.id,
        Domain.name,
        Domain.subdomain,
        Domain.link_tracking,
        Domain.open_tracking,
        Domain.unsubscribe_link,
        DKIMKey.selector,
        DKIMKey.algorithm,
        DKIMKey.private_key_encrypted.label("private_key"),
    )
    .outerjoin(DKIMKey, DKIMKey.domain_id == Domain.id)
    .where(Domain.id.in_(bindparam("ids", expanding=True)))
    .order_by(Domain.id, DKIMKey.id)
)
_RECORD = Direct(
    update(Delivery)
    .where(Delivery.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        due_at=bindparam("b_due_at"),
        claimed_by=None,
        updated_at=bindparam("b_now"),
        last_code=bindparam("b_code"),
        last_enhanced=bindparam("b_enhanced"),
        last_text=bindparam("b_text"),
        last_host=bindparam("b_host"),
    )
)


class Worker:
    def __init__(
        self,
        config: Config,
        db: Database,
        box: SecretBox,
        *,
        clock=utcnow,
        worker_id: str | None = None,
    ):
        self.config = config
        self.db = db
        self.box = box
        self.clock = clock
        self.worker_id = worker_id or new_worker_id()
        self.resolver = make_resolver(config)
        self._stop = threading.Event()
        self._pool: ProcessPoolExecutor | None = None
        self._due: dict[int, Direct] = {}  # the claim's first statement, by batch size
        # One event loop for every batch: a new one each time (asyncio.run) cost more than
        # a small batch's sending, and its default executor started new threads each time.
        self._runner: asyncio.Runner | None = None

    # -- claiming -----------------------------------------------------------------------

    def claim(self, limit: int | None = None) -> list[Job]:
        """Take up to ``limit`` due deliveries; nobody else will take them until the claim ends.

        PostgreSQL and MariaDB skip rows another worker has locked; SQLite's BEGIN
        IMMEDIATE makes the claim exclusive. A claim moves due_at forward by the claim
        timeout, so deliveries of a worker that died are taken up again after it.
        """
        now = self.clock()
        limit = limit or self.config.delivery.batch_size
        due = self._due.get(limit)
        if due is None:
            query = select(Delivery.id).where(Delivery.due_at <= bindparam("now"))
            due = self._due[limit] = Direct(
                self.db.skip_locked(query.order_by(Delivery.due_at).limit(limit))
            )
        with self.db.unit_of_work() as work:
            ids = [row[0] for row in due.all(work.conn, {"now": now})]
            if not ids:
                return []
            _CLAIM.execute(
                work.conn,
                [
                    {
                        "ids": ids,
                        "worker": self.worker_id,
                        "until": now + timedelta(seconds=self.config.delivery.claim_timeout),
                        "now": now,
                    }
                ],
            )
            rows = _CLAIMED.mappings(work.conn, {"ids": ids})
        return [Job(**row) for row in rows]

    # -- building -----------------------------------------------------------------------

    def prepare(self, jobs: list[Job]) -> tuple[dict[int, Envelope], dict[int, str]]:
        """Signed envelopes per delivery id, and the failures that need no sending.

        Each message is built and signed once, whatever its number of recipients; with
        ``delivery.build_processes`` above 1 the messages are built on several cores.
        """
        envelopes: dict[int, Envelope] = {}
        failures: dict[int, str] = {}
        with self.db.read_connection() as conn:
            messages = {
                m["id"]: SimpleNamespace(**{**m, "payload": unpack_payload(m["payload"])})
                for m in _MESSAGES.mappings(conn, {"ids": sorted({j.message_id for j in jobs})})
            }
            rows = _DOMAIN_KEYS.mappings(conn, {"ids": sorted({j.domain_id for j in jobs})})
        domains: dict[int, SimpleNamespace] = {}
        keys: dict[int, list[tuple[str, str, bytes]]] = defaultdict(list)
        for row in rows:
            domains.setdefault(row["id"], SimpleNamespace(**row))
            if row["selector"] is not None:
                private = self.box.decrypt(row["private_key"]).encode()
                keys[row["id"]].append((row["selector"], row["algorithm"], private))
        # One build per message; one per delivery where it is tracked (its links differ).
        builds: dict[str | int, BuildJob] = {}
        build_of: dict[int, str | int] = {}
        flags: dict[str, tuple[bool, bool, bool] | None] = {}
        for job in jobs:
            domain = domains.get(job.domain_id)
            if domain is None:
                failures[job.delivery_id] = "The sending domain was deleted"
                continue
            m = messages[job.message_id]
            if m.id not in flags:
                flags[m.id] = (
                    None
                    if submitted_whole(m.payload)
                    else tracking.wanted(
                        m.payload.get("track_links"),
                        m.payload.get("track_opens"),
                        domain.link_tracking,
                        domain.open_tracking,
                        domain.unsubscribe_link,
                    )
                )
            track = self._tracking(domain, job.token, flags[m.id])
            key = build_of[job.delivery_id] = job.message_id if track is None else job.delivery_id
            if key not in builds:
                builds[key] = BuildJob(
                    m.payload,
                    m.tags,
                    m.id,
                    domain.name,
                    domain.subdomain,
                    m.created_at,
                    keys[domain.id],
                    track,
                )
        backlog = self._full(jobs)
        signed = dict(zip(builds, self._build_all(list(builds.values()), backlog), strict=True))
        for job in jobs:
            domain = domains.get(job.domain_id)
            if domain is not None:
                envelopes[job.delivery_id] = Envelope(
                    mail_from=verp_address(job.token, domain.subdomain, domain.name),
                    rcpt_to=job.recipient,
                    data=signed[build_of[job.delivery_id]],
                    ref=job.delivery_id,
                )
        return envelopes, failures

    def _tracking(
        self, domain: SimpleNamespace, token: str, flags: tuple[bool, bool, bool] | None
    ) -> tracking.Tracking | None:
        """What is tracked in the message to one recipient; None when nothing is."""
        if flags is None or not tracking.can_track(token):
            return None
        base = tracking.base_url(
            self.config.tracking.base_url, self.config.http.public_url, tracking_host(domain)
        )
        return tracking.Tracking(base, self.box.tracking_key, token, *flags)

    def _full(self, jobs: list[Job]) -> bool:
        """Whether a claim took a full batch: more may be waiting (a backlog)."""
        return len(jobs) >= self.config.delivery.batch_size

    def _build_all(self, builds: list[BuildJob], backlog: bool) -> list[bytes]:
        """Every build, in the worker itself or spread over the build processes.

        Handing a build to another process costs about as much CPU again as the build
        (pickling, queues, waking both sides), so the processes take a batch's builds only
        when there is a backlog (the claim took a full batch) and at least 8 of them."""
        processes = self.config.delivery.build_processes or os.cpu_count() or 1
        if processes <= 1 or not backlog or len(builds) < 8:
            return [build_and_sign(b) for b in builds]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
        chunk = max(1, len(builds) // (processes * 4))
        return list(self._pool.map(build_and_sign, builds, chunksize=chunk))

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the build processes and the event loop, if they were started."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    # -- sending ------------------------------------------------------------------------

    async def send(self, jobs: list[Job], envelopes: dict[int, Envelope]) -> list[Outcome]:
        """Send every envelope: grouped by recipient domain, over reused connections, within
        half the claim timeout."""
        items = [
            Outgoing(j.delivery_id, j.recipient_domain, e.mail_from, e.rcpt_to, _ready(e.data))
            for j in jobs
            if (e := envelopes.get(j.delivery_id)) is not None
        ]
        deadline = time.monotonic() + self.config.delivery.claim_timeout / 2
        return await dispatch(items, self.config, self.resolver, deadline=deadline)

    # -- recording ----------------------------------------------------------------------

    def record(self, jobs: list[Job], outcomes: list[Outcome], failures: dict[int, str]) -> None:
        """Write every outcome in one transaction; a delivery no longer ours is left alone.

        Direct statements (one UPDATE executed for every row, one INSERT of the events): the
        ORM's unit of work cost more than the statements, and loading whole messages read
        every payload back only to take five columns from it. A bounce's suppression is
        written through the ORM session, joined to the same transaction.
        """
        now = self.clock()
        c = self.config.delivery
        with self.db.unit_of_work() as work:
            conn = work.conn
            ours = {
                row["delivery_id"]: SimpleNamespace(**row)
                for row in _OURS.mappings(
                    conn, {"ids": [j.delivery_id for j in jobs], "worker": self.worker_id}
                )
            }
            results = [(o.ref, o.status, o.code, o.enhanced, o.text, o.host) for o in outcomes]
            results += [(i, "failed", None, None, text, None) for i, text in failures.items()]
            changes, rows = [], []
            for ref, status, code, enhanced, text, host in results:
                delivery = ours.pop(ref, None)  # once: a reference twice is recorded once
                if delivery is None:
                    continue
                kind, due_at = status, None
                if status == "deferred":
                    age = (now - delivery.created_at).total_seconds()
                    if age >= c.max_age:
                        kind = FAILED
                        text = f"Gave up after {delivery.attempts} attempts: {text}"
                    else:
                        due_at = now + timedelta(
                            seconds=retry_delay(delivery.attempts, c.retry_base, c.retry_max)
                        )
                changes.append(
                    {
                        "b_id": delivery.delivery_id,
                        "b_status": DEFERRED
                        if kind == "deferred"
                        else {"delivered": DELIVERED, "bounced": BOUNCED}.get(kind, FAILED),
                        "b_due_at": due_at,
                        "b_now": now,
                        "b_code": code,
                        "b_enhanced": enhanced,
                        "b_text": text,
                        "b_host": host,
                    }
                )
                if kind == "bounced":
                    suppress_bounce(work.session, delivery, code, enhanced, text, now)
                rows.append(
                    events.event_values(
                        kind,
                        delivery,  # its message's columns too
                        delivery.delivery_id,
                        delivery.recipient,
                        now,
                        code=code,
                        enhanced=enhanced,
                        text=text,
                        details={"host": host, "attempt": delivery.attempts},
                    )
                )
            if changes:
                _RECORD.execute(conn, changes)
                events.insert_values(conn, rows)

    # -- the loop -----------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim one batch and see it through; the number of deliveries handled."""
        jobs = self.claim()
        if not jobs:
            return 0
        self._finish(jobs, self._prepared(jobs))
        return len(jobs)

    def _prepared(self, jobs: list[Job]) -> tuple[dict[int, Envelope], dict[int, str]] | Exception:
        try:
            return self.prepare(jobs)
        except Exception as exc:  # noqa: BLE001 - handed to _finish, which defers the batch
            return exc

    def _finish(self, jobs: list[Job], prepared) -> None:
        """Send a prepared batch and record every outcome; nothing claimed is dropped."""
        try:
            if isinstance(prepared, Exception):
                raise prepared
            envelopes, failures = prepared
            outcomes = self._run_async(self.send(jobs, envelopes)) if envelopes else []
        except Exception as exc:  # noqa: BLE001 - nothing claimed may be dropped
            log.error(
                "batch failed; its deliveries are deferred",
                extra={"worker": self.worker_id, "count": len(jobs)},
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            outcomes = [
                Outcome(
                    j.delivery_id,
                    "deferred",
                    None,
                    "4.3.0",
                    f"Internal error while sending: {type(exc).__name__}",
                    None,
                )
                for j in jobs
            ]
            failures = {}
        self.record(jobs, outcomes, failures)

    def _run_async(self, coroutine):
        if self._runner is None:
            self._runner = asyncio.Runner(loop_factory=new_event_loop)
        return self._runner.run(coroutine)

    def run(self) -> None:
        """Work until stop() is called.

        While one batch is sent and recorded, the next is already claimed and being built.
        A claim that takes less than a full batch has drained the queue: that batch is seen
        through at once, and the worker then waits poll_interval before it looks again, so
        that mail arriving meanwhile is claimed, built and sent together. Claiming again at
        once would take a batch of one or two messages each time, each paying the claim,
        its connection to the MX host and the recording of outcomes on its own.
        """
        log.info("worker started", extra={"worker": self.worker_id})
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postern-build")
        current: tuple[list[Job], Future] | None = None
        try:
            while not self._stop.is_set():
                try:
                    jobs = self.claim()
                    following = (jobs, ahead.submit(self._prepared, jobs)) if jobs else None
                    if current is not None:
                        self._finish(current[0], current[1].result())
                    current = following
                    if current is not None and not self._full(jobs):  # the queue is drained
                        self._finish(current[0], current[1].result())
                        current = None
                except Exception:  # noqa: BLE001 - a database hiccup must not end the worker
                    log.exception("worker loop error", extra={"worker": self.worker_id})
                    current = None  # what was claimed is taken up after the claim timeout
                    self._stop.wait(self.config.delivery.poll_interval)
                    continue
                if current is None:
                    self._stop.wait(self.config.delivery.poll_interval)
            if current is not None:
                self._finish(current[0], current[1].result())
        finally:
            ahead.shutdown()
            self.close()
        log.info("worker stopped", extra={"worker": self.worker_id})

    def stop(self) -> None:
        self._stop.set()
