"""What tracking URLs report: clicks, opens and unsubscribes, recorded against their delivery.

Opens of one recipient, and clicks of one recipient on one link, are recorded once per
window of ``tracking.repeat_window`` seconds (fixed windows aligned to the gateway's clock,
as rate limits are; counted in the rate limiter's store): a mail client that loads the
pixel again, or a scanner that follows a link twice, adds nothing within the window.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.events import writer as events
from commands.ratelimit import TRACKING_SCOPE
from commands.suppression import suppress
from models import Delivery
from mta.tracking import CLICK, OPEN, UNSUBSCRIBE, verify

if TYPE_CHECKING:
    from commands.gateway import Gateway

MAX_USER_AGENT = 500


@dataclass(frozen=True)
class Visitor:
    """Who followed a tracking URL, as the HTTP request says."""

    ip: str | None
    user_agent: str

    def details(self, **more: Any) -> dict[str, Any]:
        return {**more, "ip": self.ip, "user_agent": self.user_agent[:MAX_USER_AGENT]}


@dataclass(frozen=True)
class Recipient:
    """Whom an unsubscribe URL is for."""

    email: str
    domain_name: str


def click(gateway: Gateway, signed: str, visitor: Visitor, *, record: bool = True) -> str | None:
    """The URL a click token names, its click recorded; None for a token Postern did not make.

    A valid click on a delivery that is gone still gets its URL (it travels in the token).
    """
    named = verify(gateway.box.tracking_key, CLICK, signed)
    if named is None:
        return None
    token, url = named
    if not record:
        return url
    with gateway.db.transaction() as s:
        delivery = _delivery(s, token)
        if delivery is not None and _first_in_window(gateway, s, _click_bucket(delivery, url)):
            _record(s, events.CLICKED, delivery, gateway, visitor.details(url=url))
    return url


def open_(gateway: Gateway, signed: str, visitor: Visitor, *, record: bool = True) -> bool:
    """Record an open; False for a token Postern did not make."""
    named = verify(gateway.box.tracking_key, OPEN, signed)
    if named is None:
        return False
    if not record:
        return True
    with gateway.db.transaction() as s:
        delivery = _delivery(s, named[0])
        if delivery is not None and _first_in_window(gateway, s, _open_bucket(delivery)):
            _record(s, events.OPENED, delivery, gateway, visitor.details())
    return True


def recipient(gateway: Gateway, signed: str) -> Recipient | None:
    """Whom an unsubscribe token is for; None for a token Postern did not make, or whose
    delivery is gone."""
    named = verify(gateway.box.tracking_key, UNSUBSCRIBE, signed)
    if named is None:
        return None
    with gateway.db.transaction(readonly=True) as s:
        delivery = _delivery(s, named[0])
        if delivery is None:
            return None
        return Recipient(delivery.recipient, delivery.message.domain_name)


def unsubscribe(
    gateway: Gateway, signed: str, visitor: Visitor, *, one_click: bool
) -> Recipient | None:
    """Suppress the recipient for the sending domain (source "unsubscribe") and record an
    ``unsubscribed`` event; nothing more if the address is suppressed already.

    None for a token Postern did not make, or whose delivery is gone.
    """
    named = verify(gateway.box.tracking_key, UNSUBSCRIBE, signed)
    if named is None:
        return None
    how = "one-click" if one_click else "page"
    with gateway.db.transaction() as s:
        delivery = _delivery(s, named[0])
        if delivery is None:
            return None
        now = gateway.clock()
        added = suppress(
            s,
            delivery.user_id,
            delivery.recipient,
            "unsubscribe",
            f"Unsubscribed ({how})",
            now,
            domain_id=delivery.domain_id,
        )
        message = delivery.message
        if added:
            events.record(
                s,
                events.UNSUBSCRIBED,
                message,
                delivery,
                delivery.recipient,
                now,
                details=visitor.details(method=how),
            )
        return Recipient(delivery.recipient, message.domain_name)


def _open_bucket(delivery: Delivery) -> str:
    return f"{TRACKING_SCOPE}o:{delivery.id}"


def _click_bucket(delivery: Delivery, url: str) -> str:
    digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{TRACKING_SCOPE}c:{delivery.id}:{digest}"


def _first_in_window(gateway: Gateway, s: Session, bucket: str) -> bool:
    """Whether this is the first open (click on a link) of its recipient in the current
    window of ``tracking.repeat_window`` seconds, counted in the rate limiter's store: in
    the recording transaction where that is the database (two at once: one is recorded)."""
    limiter = gateway.tracking_limiter
    if limiter is None:  # repeat_window 0: every one is recorded
        return True
    if limiter.counts_in_transactions:
        return limiter.hit_in(s.connection(), bucket).allowed
    return limiter.hit(bucket).allowed


def _delivery(s: Session, token: str) -> Delivery | None:
    return s.scalar(select(Delivery).where(Delivery.token == token))


def _record(
    s: Session, kind: str, delivery: Delivery, gateway: Gateway, details: dict[str, Any]
) -> None:
    events.record(
        s, kind, delivery.message, delivery, delivery.recipient, gateway.clock(), details=details
    )
