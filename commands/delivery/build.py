"""Building claimed deliveries: what each needs to be built and signed, and the build itself.

``prepare_batch`` reads a batch's messages, domains and DKIM keys and turns each delivery
into a ``Prepared`` (its envelope and its ``BuildJob``) or, when that cannot be done, a
``Result``: "failed" when its domain was deleted, "error" when something unexpected went
wrong (a payload that cannot be read, a DKIM key that cannot be decrypted), for the
deliveries concerned only. ``build_and_sign`` turns a ``BuildJob`` into the signed message
(mta holds the mail mechanics); a job is plain data, so it may be built in another process.
"""

from __future__ import annotations

import base64
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import bindparam, select

from commands.delivery.outcomes import Result
from commands.delivery.queue import Claimed
from commands.templates.render import personalized
from core.crypto import SecretBox
from models import Database, DKIMKey, Domain, Message
from models.direct import Direct
from models.domains import KEY_ACTIVE
from models.payload import Composed, Payload, Submitted, decode_payload
from mta import tracking
from mta.message import (
    DROPPED_AT_SUBMISSION,
    Address,
    Attachment,
    MessageSpec,
    build_message,
)
from mta.signing import SigningKey, sign_message
from mta.verp import verp_address


@dataclass(frozen=True)
class BuildJob:
    """What building and signing one message needs, as plain data (it may cross processes)."""

    payload: Payload
    tags: str  # JSON list
    message_id: str
    domain_name: str
    subdomain: str
    created_at: datetime
    keys: tuple[tuple[str, str, bytes], ...]  # (selector, algorithm, private PEM)
    track: tracking.Tracking | None = None  # set: the message to one recipient, tracked
    recipient: str = ""  # whom a personalized message is rendered for


@dataclass(frozen=True)
class Prepared:
    """A claimed delivery ready to send: its envelope and how to build its message.

    Deliveries of one untracked message share one ``job`` (one build serves them all); a
    tracked or personalized message has a job per delivery (its links or its text differ)."""

    delivery_id: int
    recipient_domain: str
    mail_from: str
    rcpt_to: str
    job: BuildJob


@dataclass(frozen=True)
class TrackingURLs:
    """Where tracking links point: ``tracking.base_url``, else the domain's tracking host
    (``host``: commands.domains.dns_records.tracking_host, given by the caller, as the
    domains package depends on this one) with the scheme and port of ``http.public_url``."""

    base_url: str
    public_url: str
    host: Callable[[Domain], str]


def build_and_sign(job: BuildJob) -> bytes:
    """The complete message, DKIM-signed with each of the domain's keys."""
    signing_domain = f"{job.subdomain}.{job.domain_name}"
    keys = [SigningKey(signing_domain, sel, alg, pem) for sel, alg, pem in job.keys]
    p = job.payload
    if isinstance(p, Submitted):  # complete already
        return sign_message(prepare_raw(p.data, job), keys)
    p = personalized(p, job.recipient)
    html, text = p.html, p.text
    extra: dict[str, str] = {}
    if job.track is not None:
        html, text, extra = tracking.apply(job.track, html, text)
    spec = MessageSpec(
        sender=Address(p.sender.email, p.sender.name),
        to=[Address(a.email, a.name) for a in p.to],
        cc=[Address(a.email, a.name) for a in p.cc],
        reply_to=[Address(a.email, a.name) for a in p.reply_to],
        subject=p.subject,
        html=html,
        text=text,
        attachments=[
            Attachment(a.filename, base64.b64decode(a.content), a.type, a.disposition, a.contentid)
            for a in p.attachments
        ],
        headers=p.headers,
        tags=json.loads(job.tags),
        message_id=f"<{job.message_id}@{job.domain_name}>",
        date=job.created_at,
        extra_headers=extra,
        sender_header=Address(p.sender_header.email, p.sender_header.name)
        if p.sender_header is not None
        else None,
    )
    return sign_message(build_message(spec), keys)


def prepare_raw(data: bytes, job: BuildJob) -> bytes:
    """A submitted message made ready to sign: CRLF lines, Message-ID and Date, without
    Bcc, Return-Path, Delivered-To and X-Original-To (``DROPPED_AT_SUBMISSION``)."""
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
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        skipping = name in DROPPED_AT_SUBMISSION
        if not skipping:
            lines.append(line)
    names = {ln.split(b":", 1)[0].strip().lower() for ln in lines if b":" in ln}
    if b"message-id" not in names:
        lines.insert(0, f"Message-ID: <{job.message_id}@{job.domain_name}>".encode())
    if b"date" not in names:
        lines.insert(0, f"Date: {format_datetime(job.created_at)}".encode())
    return b"\r\n".join(lines) + (sep or b"\r\n\r\n") + body


def describe(exc: BaseException) -> str:
    """An unexpected error as recorded with its deliveries: "<ExceptionType>: <message>"."""
    return f"{type(exc).__name__}: {exc}"


# What preparing reads: the messages of a batch, their domains and the domains' DKIM keys.
_MESSAGES = Direct(
    select(Message.id, Message.user_id, Message.payload, Message.tags, Message.created_at).where(
        Message.id.in_(bindparam("ids", expanding=True))
    )
)
# A domain's row once per active key (once with none), in one statement: both read at one time.
_DOMAIN_KEYS = Direct(
    select(
        Domain.id,
        Domain.user_id,
        Domain.name,
        Domain.subdomain,
        Domain.link_tracking,
        Domain.open_tracking,
        Domain.unsubscribe_link,
        DKIMKey.selector,
        DKIMKey.algorithm,
        DKIMKey.private_key_encrypted.label("private_key"),
    )
    # The active keys only: a rotation's pending key is not published yet, perhaps, and a
    # retiring one is published only for mail signed with it before.
    .outerjoin(DKIMKey, (DKIMKey.domain_id == Domain.id) & (DKIMKey.status == KEY_ACTIVE))
    .where(Domain.id.in_(bindparam("ids", expanding=True)))
    .order_by(Domain.id, DKIMKey.id)
)


def prepare_batch(
    db: Database, box: SecretBox, claimed: Iterable[Claimed], urls: TrackingURLs
) -> tuple[list[Prepared], list[Result]]:
    """Each claimed delivery as a ``Prepared``, or as a ``Result`` when it cannot be sent:
    an unexpected error concerns the deliveries of its message (or of its domain's keys)
    alone."""
    claimed = list(claimed)
    with db.read_connection() as conn:
        messages = _MESSAGES.mappings(conn, {"ids": sorted({c.message_id for c in claimed})})
        rows = _DOMAIN_KEYS.mappings(conn, {"ids": sorted({c.domain_id for c in claimed})})
    payloads: dict[str, Payload | BaseException] = {}
    for m in messages:
        try:
            payloads[m["id"]] = decode_payload(m["payload"])
        except Exception as exc:  # noqa: BLE001 - this message's deliveries only
            payloads[m["id"]] = exc
    by_id = {m["id"]: m for m in messages}
    domains: dict[int, dict[str, Any]] = {}
    keys: dict[int, list[tuple[str, str, bytes]] | BaseException] = defaultdict(list)
    for row in rows:
        domains.setdefault(row["id"], row)
        found = keys[row["id"]]
        if row["selector"] is None or isinstance(found, BaseException):
            continue
        try:
            private = box.decrypt(row["private_key"]).encode()
        except Exception as exc:  # noqa: BLE001 - this domain's deliveries only
            keys[row["id"]] = exc
            continue
        found.append((row["selector"], row["algorithm"], private))

    ready: list[Prepared] = []
    results: list[Result] = []
    shared: dict[str, BuildJob] = {}  # a message's one job, when it is not tracked
    for c in claimed:
        domain, message = domains.get(c.domain_id), by_id.get(c.message_id)
        # The domain must be the message's own user's: a domain id alone proves nothing.
        if (
            domain is None
            or message is None
            or domain["user_id"] != c.user_id
            or message["user_id"] != c.user_id
        ):
            results.append(Result(c.delivery_id, "failed", text="The sending domain was deleted"))
            continue
        payload, domain_keys = payloads[c.message_id], keys[c.domain_id]
        problem = next((p for p in (payload, domain_keys) if isinstance(p, BaseException)), None)
        if problem is not None:
            results.append(Result(c.delivery_id, "error", text=describe(problem)))
            continue
        payload = cast(Payload, payload)
        track = _tracking(payload, domain, c.token, box.tracking_key, urls)
        own = track is not None or (
            isinstance(payload, Composed) and payload.personalization is not None
        )
        job = None if own else shared.get(c.message_id)
        if job is None:
            job = BuildJob(
                payload,
                message["tags"],
                message["id"],
                domain["name"],
                domain["subdomain"],
                message["created_at"],
                tuple(cast(list[tuple[str, str, bytes]], domain_keys)),
                track,
                c.recipient if own else "",
            )
            if not own:
                shared[c.message_id] = job
        mail_from = verp_address(c.token, domain["subdomain"], domain["name"])
        ready.append(Prepared(c.delivery_id, c.recipient_domain, mail_from, c.recipient, job))
    return ready, results


def _tracking(
    payload: Payload, domain: dict[str, Any], token: str, key: bytes, urls: TrackingURLs
) -> tracking.Tracking | None:
    """What is tracked in the message to one recipient; None when nothing is."""
    if not isinstance(payload, Composed) or not tracking.can_track(token):
        return None
    flags = tracking.wanted(
        payload.track_links,
        payload.track_opens,
        domain["link_tracking"],
        domain["open_tracking"],
        domain["unsubscribe_link"],
    )
    if flags is None:
        return None
    host = urls.host(cast(Domain, SimpleNamespace(**domain)))
    base = tracking.base_url(urls.base_url, urls.public_url, host)
    return tracking.Tracking(base, key, token, *flags)
