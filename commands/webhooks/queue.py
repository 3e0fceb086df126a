"""The webhook delivery queue: claim due deliveries, prepare their POSTs, record each attempt.

The webhook sender (app/workers/webhooks.py) holds the loop and the HTTP posting; the
database work is here. Each delivery is prepared and recorded on its own: a delivery that
cannot be prepared (its signing key does not decrypt, its event cannot be read) comes back
as a failed ``Attempt`` of its own while the others of its claim are posted, and is retried
on ``webhooks.retry_schedule`` until ``GIVE_UP_AFTER`` such internal errors fail it.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session

from commands.events import writer as events
from commands.webhooks.infobip import PUSH_FORMAT, push_body, push_sources
from commands.webhooks.payload import event_body
from commands.webhooks.postal import POSTAL, PostalSigner, postal_body
from core.crypto import SecretBox
from models import (
    Database,
    Delivery,
    Domain,
    Event,
    InfobipMessage,
    Message,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from models.webhooks import FAILED, PENDING, SUCCEEDED

log = logging.getLogger("postern.webhooks")

MAX_ERROR = 1000  # characters of an error kept with an attempt
INTERNAL_ERROR = "Internal error"  # how the attempt log starts an error of Postern's own
GIVE_UP_AFTER = 3  # internal errors of one delivery after which it is failed


@dataclass(frozen=True)
class Post:
    """A claimed delivery, ready to post."""

    delivery_id: int
    url: str
    message_id: str  # the event's uid: webhook-id, the same on every retry
    body: bytes
    signing_key: str = field(repr=False)
    # A Postal-format POST's signature headers (they depend on the body alone); None: the
    # sender signs it with ``signing_key`` and the time of the POST.
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Attempt:
    """How one POST went (or why a claimed delivery could not be posted)."""

    delivery_id: int
    at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None
    final: bool = False  # not worth retrying (a refused address, a vanished event)
    internal: bool = False  # an unexpected error of Postern's, not the receiver's answer

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def internal_error(
    delivery_id: int, at: datetime, doing: str, exc: BaseException, duration_ms: int = 0
) -> Attempt:
    """The attempt of a delivery that failed on an unexpected exception while ``doing``.

    Its text names the step and the exception's type only: an exception's message may
    hold a secret or an address.
    """
    error = f"{INTERNAL_ERROR} {doing}: {type(exc).__name__}"
    return Attempt(delivery_id, at, None, duration_ms, error, internal=True)


@dataclass(frozen=True)
class Recorded:
    """A delivery after an attempt was recorded: what follows for it."""

    delivery_id: int
    status: str  # PENDING (retried at due_at), SUCCEEDED or FAILED
    attempts: int
    due_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class Claimed:
    """A delivery taken by one sender: what its POST is made from."""

    delivery_id: int
    url: str
    event_id: int
    event_name: str
    domain_id: int
    user_id: int
    format: str = "postern"  # the webhook's; "infobip" for a push of no webhook


@dataclass(frozen=True)
class Sources:
    """The events and encrypted signing keys a claim's POSTs are made from, and the
    deliveries and messages of the events of Postal-format webhooks."""

    events: dict[int, Event]
    keys: dict[tuple[int, int], str]  # (domain id, its user's id): signing key, encrypted
    deliveries: dict[int, Delivery] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)
    infobip: dict[int, InfobipMessage] = field(default_factory=dict)  # by delivery id


def claim_deliveries(
    db: Database,
    box: SecretBox,
    *,
    worker_id: str,
    now: datetime,
    limit: int,
    hold: timedelta,
    per_webhook: int | None = None,
    per_user: int | None = None,
    postal_signer: Callable[[], PostalSigner] | None = None,
) -> list[Post | Attempt]:
    """Take up to ``limit`` due deliveries for ``hold`` (at most ``per_webhook`` and
    ``per_user`` in flight, see ``claim``); each as its Post, or as its failed Attempt when
    it cannot be posted (to be recorded like any other). ``postal_signer`` gives the key
    of Postal-format webhooks (called only when one is claimed)."""
    claimed = claim(
        db,
        worker_id=worker_id,
        now=now,
        limit=limit,
        hold=hold,
        per_webhook=per_webhook,
        per_user=per_user,
    )
    if not claimed:
        return []
    try:
        sources: Sources | None = read_sources(db, claimed)
    except Exception:  # noqa: BLE001 - read each delivery's on its own, below
        log.exception("webhook deliveries not read together", extra={"count": len(claimed)})
        sources = None
    signer = _once(postal_signer) if postal_signer is not None else None
    return [prepare(item, sources, db, box, now, signer) for item in claimed]


def _once(make: Callable[[], PostalSigner]) -> Callable[[], PostalSigner]:
    """``make``, called at most once (the key is looked up once for a claim)."""
    made: list[PostalSigner] = []

    def get() -> PostalSigner:
        if not made:
            made.append(make())
        return made[0]

    return get


def claim(
    db: Database,
    *,
    worker_id: str,
    now: datetime,
    limit: int,
    hold: timedelta,
    per_webhook: int | None = None,
    per_user: int | None = None,
) -> list[Claimed]:
    """Mark up to ``limit`` due deliveries as ``worker_id``'s until ``now + hold``.

    As the delivery worker's claim: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and MariaDB,
    the write lock on SQLite, and due_at moved past the time the POSTs may take, so the
    deliveries of a process that died are taken up again after it.

    Fair: at most ``per_webhook`` deliveries of one webhook and ``per_user`` of one user's
    webhooks are in flight at once, counting those other senders hold (claimed, their
    claim not yet run out). The oldest due of each webhook and user are taken first, so
    one webhook with a long queue, slow or failing, does not hold up the others'.
    """
    per_webhook = per_webhook or limit
    per_user = per_user or limit
    with db.transaction() as s:
        d = WebhookDelivery
        # A push (no webhook: commands/webhooks/infobip.py) counts as one of the pushes of
        # its user: they share -user_id as the key of their "webhook".
        hook_key = func.coalesce(d.webhook_id, -d.user_id)
        pending = d.status == PENDING
        in_flight = (pending, d.claimed_by.is_not(None), d.due_at > now)
        busy_hooks: Counter[int] = Counter(
            _pairs(s.execute(select(hook_key, func.count()).where(*in_flight).group_by(hook_key)))
        )
        busy_users: Counter[int] = Counter(
            _pairs(s.execute(select(d.user_id, func.count()).where(*in_flight).group_by(d.user_id)))
        )
        by_hook = (
            select(
                d.id,
                hook_key.label("webhook_id"),
                d.user_id,
                d.due_at,
                func.row_number().over(partition_by=hook_key, order_by=(d.due_at, d.id)).label("n"),
            )
            .where(d.due_at <= now, pending)
            .subquery()
        )
        by_user = (
            select(
                by_hook.c.id,
                by_hook.c.webhook_id,
                by_hook.c.user_id,
                by_hook.c.due_at,
                func.row_number()
                .over(partition_by=by_hook.c.user_id, order_by=(by_hook.c.due_at, by_hook.c.id))
                .label("m"),
            )
            .where(by_hook.c.n <= per_webhook)
            .subquery()
        )
        candidates = s.execute(
            select(by_user.c.id, by_user.c.webhook_id, by_user.c.user_id)
            .where(by_user.c.m <= per_user)
            .order_by(by_user.c.due_at, by_user.c.id)
        )
        chosen: list[int] = []
        for row in candidates:
            delivery_id, webhook_id, user_id = int(row[0]), int(row[1]), int(row[2])
            if len(chosen) >= limit:
                break
            if busy_hooks[webhook_id] >= per_webhook or busy_users[user_id] >= per_user:
                continue
            chosen.append(delivery_id)
            busy_hooks[webhook_id] += 1
            busy_users[user_id] += 1
        if not chosen:
            return []
        # Locked now (skipping those another sender has just taken): still due and pending.
        ids = list(
            s.scalars(
                db.skip_locked(
                    select(d.id).where(d.id.in_(chosen), d.due_at <= now, pending).order_by(d.id)
                )
            )
        )
        if not ids:
            return []
        s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids))
            .values(claimed_by=worker_id, due_at=now + hold)
        )
        rows = s.execute(
            select(
                WebhookDelivery.id,
                WebhookDelivery.url,
                WebhookDelivery.event_id,
                WebhookDelivery.event_name,
                WebhookDelivery.domain_id,
                WebhookDelivery.user_id,
                Webhook.format,
            )
            .outerjoin(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(WebhookDelivery.id.in_(ids))
            .order_by(WebhookDelivery.id)
        )
        return [Claimed(*row[:6], format=row[6] or PUSH_FORMAT) for row in rows]


def read_sources(db: Database, items: Iterable[Claimed]) -> Sources:
    """The events and signing keys of ``items``, in one read."""
    items = list(items)
    with db.transaction(readonly=True) as s:
        events = {
            e.id: e
            for e in s.scalars(select(Event).where(Event.id.in_({i.event_id for i in items})))
        }
        keys = {
            (domain_id, user_id): encrypted
            for domain_id, user_id, encrypted in s.execute(
                select(Domain.id, Domain.user_id, Domain.signing_key_encrypted).where(
                    Domain.id.in_({i.domain_id for i in items})
                )
            )
        }
        postal = [events[i.event_id] for i in items if i.format == POSTAL and i.event_id in events]
        deliveries: dict[int, Delivery] = {}
        messages: dict[str, Message] = {}
        if postal:
            wanted = {e.delivery_id for e in postal if e.delivery_id is not None}
            deliveries = {
                d.id: d for d in s.scalars(select(Delivery).where(Delivery.id.in_(wanted)))
            }
            messages = {
                m.id: m
                for m in s.scalars(
                    select(Message).where(Message.id.in_({e.message_id for e in postal}))
                )
            }
        pushed = [
            events[i.event_id] for i in items if i.format == PUSH_FORMAT and i.event_id in events
        ]
        infobip: dict[int, InfobipMessage] = {}
        if pushed:
            infobip, of_pushes = push_sources(s, pushed)
            deliveries.update(of_pushes)
    return Sources(events, keys, deliveries, messages, infobip)


def prepare(
    item: Claimed,
    sources: Sources | None,
    db: Database,
    box: SecretBox,
    now: datetime,
    postal_signer: Callable[[], PostalSigner] | None = None,
) -> Post | Attempt:
    """``item``'s Post; its failed Attempt when it cannot be made. Never raises.

    ``sources`` None means they could not be read for the whole claim: ``item``'s own are
    read alone.
    """
    doing = "reading its event and signing key"
    try:
        if sources is None:
            sources = read_sources(db, [item])
        event = sources.events.get(item.event_id)
        # Signed only with the key of the domain and user the event and the delivery name.
        encrypted = sources.keys.get((item.domain_id, item.user_id))
        if (
            event is None
            or encrypted is None
            or (event.domain_id, event.user_id) != (item.domain_id, item.user_id)
        ):
            return Attempt(item.delivery_id, now, None, 0, "The event or its domain is gone", True)
        doing = "decrypting the signing key"
        key = box.decrypt(encrypted)
        doing = "building the body"
        headers = None
        if item.format == PUSH_FORMAT:
            ib = sources.infobip.get(event.delivery_id or 0)
            if ib is None or ib.user_id != item.user_id:
                return Attempt(item.delivery_id, now, None, 0, "The message is gone", True)
            body, content_type = push_body(
                event, item.event_name, ib, sources.deliveries.get(ib.delivery_id)
            )
            # Unsigned, as Infobip posts them; the Content-Type is the one asked for.
            headers = {"Content-Type": content_type}
        elif item.format == POSTAL:
            delivery = sources.deliveries.get(event.delivery_id or 0)
            if delivery is not None and delivery.message_id != event.message_id:
                delivery = None  # pragma: no cover - an event names its own delivery
            body = postal_body(event, delivery, sources.messages.get(event.message_id))
            if postal_signer is None:
                raise RuntimeError("no Postal signing key was given")
            doing = "signing the POST"
            headers = postal_signer().headers(body)
        else:
            body = event_body(event, item.event_name)
    except Exception as exc:  # noqa: BLE001 - recorded with the delivery, retried, never dropped
        log.exception("webhook delivery not prepared", extra={"delivery": item.delivery_id})
        return internal_error(item.delivery_id, now, doing, exc)
    return Post(item.delivery_id, item.url, event.uid, body, key, headers)


def record_attempt(
    db: Database,
    attempt: Attempt,
    *,
    worker_id: str,
    now: datetime,
    retry_schedule: Sequence[float],
    disable_after: timedelta | None = None,
) -> Recorded | None:
    """Log the attempt and decide what follows, in one transaction: succeeded; failed (a
    final error, the schedule run out, or ``GIVE_UP_AFTER`` internal errors); else retried
    after the schedule's next delay. None when the delivery is no longer ``worker_id``'s
    (deleted with its webhook, or its claim ran out): it is left alone.

    The webhook's failing streak is kept too (``Webhook.failing_since``; internal errors do
    not count): a webhook whose POSTs have only failed for ``disable_after`` is disabled
    (``disable_webhook``), and this delivery is failed with the others it had pending."""
    with db.transaction() as s:
        query = select(WebhookDelivery).where(
            WebhookDelivery.id == attempt.delivery_id,
            WebhookDelivery.claimed_by == worker_id,
            WebhookDelivery.status == PENDING,
        )
        if db.backend != "sqlite":
            query = query.with_for_update()
        delivery = s.scalar(query)
        if delivery is None:
            return None
        internal_errors = 0
        if attempt.internal:
            internal_errors = 1 + (
                s.scalar(
                    select(func.count())
                    .select_from(WebhookAttempt)
                    .where(
                        WebhookAttempt.delivery_id == delivery.id,
                        WebhookAttempt.error.startswith(INTERNAL_ERROR),
                    )
                )
                or 0
            )
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
        elif attempt.final or delivery.attempts > len(retry_schedule):
            delivery.status, delivery.due_at = FAILED, None
        elif internal_errors >= GIVE_UP_AFTER:
            delivery.status, delivery.due_at = FAILED, None
            delivery.last_error = f"{error} (given up after {internal_errors} internal errors)"
        else:
            delay = retry_schedule[delivery.attempts - 1] * random.uniform(0.9, 1.1)  # noqa: S311
            delivery.due_at = now + timedelta(seconds=delay)
        if not attempt.internal and delivery.webhook_id is not None:
            disabled = _follow_streak(
                s, delivery.webhook_id, attempt.ok, now, disable_after, except_id=delivery.id
            )
            if disabled and delivery.status == PENDING:
                delivery.status, delivery.due_at = FAILED, None
                delivery.last_error = f"{error} ({DISABLED})"
        if delivery.status == FAILED:
            log.warning(
                "webhook delivery failed",
                extra={
                    "delivery": delivery.id,
                    "attempts": delivery.attempts,
                    "error": delivery.last_error,
                },
            )
        return Recorded(
            delivery.id, delivery.status, delivery.attempts, delivery.due_at, delivery.last_error
        )


def _pairs(rows: Iterable[Any]) -> dict[int, int]:
    return {key: count for key, count in rows}


DISABLED = "the webhook was disabled"


def _follow_streak(
    s: Session,
    webhook_id: int,
    ok: bool,
    now: datetime,
    disable_after: timedelta | None,
    *,
    except_id: int,
) -> bool:
    """Keep the webhook's failing streak after an attempt; whether it was disabled now."""
    hook = Webhook.id == webhook_id
    if ok:
        s.execute(
            update(Webhook)
            .where(hook, Webhook.failing_since.is_not(None))
            .values(failing_since=None)
        )
        return False
    s.execute(
        update(Webhook).where(hook, Webhook.failing_since.is_(None)).values(failing_since=now)
    )
    if not disable_after:
        return False
    since = s.scalar(select(Webhook.failing_since).where(hook, Webhook.active.is_(True)))
    if since is None or now - since < disable_after:
        return False
    days = (now - since).total_seconds() / 86400
    reason = f"Every POST failed for {days:.1f} days (since {since:%Y-%m-%d %H:%M:%S} UTC)"
    disable_webhook(s, webhook_id, now, reason, except_id=except_id)
    return True


def disable_webhook(
    s: Session, webhook_id: int, now: datetime, reason: str, *, except_id: int | None = None
) -> int:
    """Disable a webhook (no new deliveries are made for it) and fail its pending
    deliveries (but ``except_id``'s); the number failed. Logged as the event it is."""
    s.execute(
        update(Webhook)
        .where(Webhook.id == webhook_id)
        .values(active=False, disabled_at=now, disabled_reason=reason[:255])
    )
    where = [WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.status == PENDING]
    if except_id is not None:
        where.append(WebhookDelivery.id != except_id)
    result = s.execute(
        update(WebhookDelivery)
        .where(*where)
        .values(
            status=FAILED,
            due_at=None,
            claimed_by=None,
            last_error=f"Not posted: {DISABLED}",
            updated_at=now,
        )
    )
    failed = int(cast(CursorResult[Any], result).rowcount or 0)
    domain = s.execute(
        select(Domain.id, Domain.user_id, Domain.name)
        .join(Webhook, Webhook.domain_id == Domain.id)
        .where(Webhook.id == webhook_id)
    ).one_or_none()
    domain_id = domain.id if domain is not None else None
    if domain is not None:
        row = events.domain_event_values(
            events.WEBHOOK_DISABLED,
            domain.user_id,
            domain.id,
            domain.name,
            now,
            text=reason,
            details={"webhook_id": webhook_id, "pending_failed": failed},
        )
        events.write(s.connection(), [row])
    log.warning(
        "webhook disabled",
        extra={
            "webhook": webhook_id,
            "domain": domain_id,
            "reason": reason,
            "pending_failed": failed,
        },
    )
    return failed


def prune_deliveries(db: Database, *, now: datetime, keep_days: int, chunk: int = 1000) -> int:
    """Delete finished deliveries (and their attempts) last changed more than ``keep_days``
    ago, ``chunk`` at a time, each chunk in a transaction of its own; the number deleted.
    ``keep_days`` 0 keeps them all."""
    if not keep_days:
        return 0
    cutoff = now - timedelta(days=keep_days)
    deleted = 0
    while True:
        with db.transaction() as s:
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
