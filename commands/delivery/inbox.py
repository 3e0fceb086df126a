"""Mail back to Postern: DSN bounces and ARF complaints closing the loop on deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.delivery.outcomes import SoftRule, apply_failure
from commands.events import writer as events
from commands.suppression import suppress
from models import Delivery, Domain, Message
from mta import feedback
from mta.addresses import belongs
from mta.bounces import Report
from mta.classify import HARD, IGNORE, SOFT
from mta.verp import verp_token

COMPLAINED = "complained"
NOT_SPAM = "not_spam"
AUTH_FAILURE = "auth_failure"


@dataclass
class Outcome:
    bounced: int = 0
    deferred: int = 0
    failed: int = 0  # failures of class block or message (no suppression)
    complained: int = 0
    not_spam: int = 0
    unsubscribed: int = 0
    auth_failures: int = 0
    unmatched: int = 0


def _split_host(host: str) -> tuple[str, str] | None:
    sub, _, name = host.strip().lower().rstrip(".").partition(".")
    return (sub, name) if sub and name else None


def is_return_path_host(db: Session, host: str) -> bool:
    """Whether ``host`` is the return-path host (<subdomain>.<domain>) of a known domain."""
    parts = _split_host(host)
    if parts is None:
        return False
    sub, name = parts
    return (
        db.scalar(select(Domain.id).where(Domain.name == name, Domain.subdomain == sub).limit(1))
        is not None
    )


@dataclass(frozen=True)
class Scope:
    """Whose messages a report may name by Message-ID alone: one user's, of these domains."""

    user_id: int
    domain_ids: frozenset[int]


def _host_scope(db: Session, address: str) -> Scope | None:
    """The owner of the return-path host ``address`` was mailed to, with that user's domains
    of that host; None when no one, or more than one user, has a domain there (then nothing
    is proved about whose messages a report names)."""
    parts = _split_host(address.rpartition("@")[2])
    if parts is None:
        return None
    sub, name = parts
    rows = db.execute(
        select(Domain.user_id, Domain.id).where(Domain.name == name, Domain.subdomain == sub)
    ).all()
    owners = {user_id for user_id, _ in rows}
    if len(owners) != 1:
        return None
    return Scope(owners.pop(), frozenset(domain_id for _, domain_id in rows))


def _by_token(db: Session, token: str | None) -> Delivery | None:
    if not token:
        return None
    return db.scalar(select(Delivery).where(Delivery.token == token))


def _by_message_id(
    db: Session, message_id: str | None, recipient: str | None, scope: Scope | None
) -> Delivery | None:
    """The delivery of the original message to ``recipient`` (the Message-ID fallback),
    among the messages of ``scope`` only: a Message-ID is no proof of whose message it is."""
    if not message_id or scope is None:
        return None
    local = message_id.strip().strip("<>").split("@", 1)[0]
    if len(local) != 36:
        return None
    query = select(Delivery).where(
        Delivery.message_id == local,
        Delivery.user_id == scope.user_id,
        Delivery.domain_id.in_(scope.domain_ids),
    )
    rows = list(db.scalars(query))
    if recipient:
        rows = [d for d in rows if d.recipient.lower() == recipient.lower()]
    return rows[0] if len(rows) == 1 else None


def apply_report(
    db: Session,
    report: Report,
    recipients: list[str],
    now: datetime,
    soft: SoftRule,
) -> Outcome:
    """Record what a parsed report says about the deliveries it names.

    ``recipients`` are the envelope recipients the report was mailed to (return paths).
    A recipient's valid VERP token names its delivery; a report status it does not name is
    matched by the report's Message-ID only among the messages of the token's user, or,
    without a valid token, of the user who owns the return-path host it was mailed to (and
    of that host's domains): a report naming another user's message changes nothing. The
    events are written together at the end, through the event writer.
    """
    tokens = [verp_token(r) for r in recipients]
    hosts = [_host_scope(db, r) for r in recipients]
    out = Outcome()
    written: list[dict[str, Any]] = []
    statuses = report.recipients or []
    for i, status in enumerate(statuses):
        j = i if i < len(recipients) else (0 if len(recipients) == 1 else None)
        token = tokens[j] if j is not None else None
        delivery = _by_token(db, token)
        scope = hosts[j] if j is not None else None
        if delivery is not None:  # a valid token proves its delivery's user, whatever the host
            scope = Scope(delivery.user_id, frozenset({delivery.domain_id}))
        if (
            delivery is not None
            and status.recipient
            and delivery.recipient.lower() != status.recipient.lower()
            and len(statuses) > 1
        ):
            delivery = None  # a multi-recipient report: match each to its own delivery
        delivery = delivery or _by_message_id(
            db, report.original_message_id, status.recipient, scope
        )
        if delivery is None:
            out.unmatched += 1
            continue
        message = db.get(Message, delivery.message_id)
        if message is None:  # pragma: no cover - a delivery goes with its message
            out.unmatched += 1
            continue
        code, enhanced = status.smtp_code, status.status
        text = status.diagnostic or None
        details: dict[str, Any] = {
            "source": "dsn" if report.kind == "bounce" else "arf",
            "remote_mta": status.remote_mta,
        }
        if report.kind == "complaint":
            details["feedback_type"] = report.feedback_type
            _feedback(db, written, out, report, message, delivery, text, details, now)
        elif (klass := status.bounce_class) != IGNORE:
            delivery.status = apply_failure(
                db,
                written,
                message,
                delivery.id,
                delivery.user_id,
                delivery.recipient,
                now,
                klass=klass,
                code=code,
                enhanced=enhanced,
                text=text,
                details=details,
                soft=soft,
            )
            delivery.due_at = None
            delivery.last_code, delivery.last_enhanced, delivery.last_text = code, enhanced, text
            delivery.updated_at = now
            if klass in (HARD, SOFT):
                out.bounced += 1
            else:
                out.failed += 1
        elif status.action == "delayed":
            written.append(
                events.event_values(
                    events.DEFERRED,
                    message,
                    delivery.id,
                    delivery.recipient,
                    now,
                    code=code,
                    enhanced=enhanced,
                    text=text,
                    details={
                        **details,
                        "note": "delay reported by the receiving side",
                        "bounce_class": IGNORE,
                    },
                )
            )
            out.deferred += 1
    if out.auth_failures == 0 and feedback.action_of(report.feedback_type) == feedback.AUTH_FAILURE:
        _unmatched_auth_failure(db, written, out, report, hosts, now)
    events.write(db.connection(), written)
    return out


def _unmatched_auth_failure(
    db: Session,
    written: list[dict[str, Any]],
    out: Outcome,
    report: Report,
    hosts: list[Scope | None],
    now: datetime,
) -> None:
    """An authentication failure report that names no message of Postern's (mail forged in
    the domain's name, most often) is kept as an event of the domain whose return-path host
    it was mailed to: one ``auth_failure`` with no message or recipient, its RFC 6591 fields
    in the details. Mailed to no such host (or to one that two users share), it is dropped:
    nothing proves whose domain it is about."""
    scope = next((h for h in hosts if h is not None), None)
    if scope is None:
        return
    domains = db.execute(
        select(Domain.id, Domain.name).where(
            Domain.id.in_(scope.domain_ids), Domain.user_id == scope.user_id
        )
    ).all()
    if not domains:
        return
    reported = report.auth_fields.get("reported-domain", "").strip().lower().rstrip(".")
    domain_id, name = next(
        ((i, n) for i, n in domains if reported and belongs(f"x@{reported}", n)),
        min(domains),
    )
    statuses = report.recipients or []
    written.append(
        events.domain_event_values(
            AUTH_FAILURE,
            scope.user_id,
            domain_id,
            name,
            now,
            text=(statuses[0].diagnostic if statuses else None) or None,
            details={
                "source": "arf",
                "feedback_type": report.feedback_type,
                "original_message_id": report.original_message_id,
                "original_rcpt_to": statuses[0].recipient if statuses else None,
                **{k.replace("-", "_"): v for k, v in report.auth_fields.items()},
            },
        )
    )
    out.auth_failures += 1
    out.unmatched = max(0, out.unmatched - len(statuses))


def _feedback(
    db: Session,
    written: list[dict[str, Any]],
    out: Outcome,
    report: Report,
    message: Message,
    delivery: Delivery,
    text: str | None,
    details: dict[str, Any],
    now: datetime,
) -> None:
    """Act on a feedback report by its type: a complaint suppresses the address for all the
    user's domains (``complained``); ``not-spam`` and ``auth-failure`` are only recorded
    (``not_spam``, ``auth_failure``); ``opt-out`` unsubscribes the address from the sending
    domain, as an unsubscribe link does (``unsubscribed``, once)."""
    action = feedback.action_of(report.feedback_type)
    if action == feedback.OPT_OUT:
        added = suppress(
            db,
            delivery.user_id,
            delivery.recipient,
            "unsubscribe",
            "Unsubscribed (feedback report)",
            now,
            domain_id=delivery.domain_id,
        )
        if added:
            written.append(
                events.event_values(
                    events.UNSUBSCRIBED,
                    message,
                    delivery.id,
                    delivery.recipient,
                    now,
                    text=text,
                    details={**details, "method": "feedback-report"},
                )
            )
        out.unsubscribed += 1
        return
    kind = {feedback.NOT_SPAM: NOT_SPAM, feedback.AUTH_FAILURE: AUTH_FAILURE}.get(
        action, COMPLAINED
    )
    written.append(
        events.event_values(
            kind, message, delivery.id, delivery.recipient, now, text=text, details=details
        )
    )
    if kind == NOT_SPAM:
        out.not_spam += 1
    elif kind == AUTH_FAILURE:
        out.auth_failures += 1
    else:
        suppress(
            db,
            delivery.user_id,
            delivery.recipient,
            "complaint",
            f"Complaint ({report.feedback_type or 'abuse'})",
            now,
        )
        out.complained += 1
