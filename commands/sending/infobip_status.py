"""Infobip's status and error objects for what happened to a delivery, and its timestamps.

One table (``infobip_outcome``) serves the one-time reports, the logs and the reports
pushed to a ``notifyUrl``: a delivery's state (its final event, or its status while it is
still on its way) becomes Infobip's ``status`` (group, id, name) and ``error`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Event types (commands/events/writer.py) that end a delivery; the report is about the last.
FINAL_EVENTS = ("delivered", "bounced", "failed", "blocked", "suppressed")
# Delivery statuses (models/messages.py) of a delivery that has ended.
ENDED = ("delivered", "bounced", "failed", "suppressed")
# Infobip's general statuses (status.groupName) and the delivery statuses each may be.
GENERAL_STATUSES = {
    "ACCEPTED": ("queued",),
    "PENDING": ("queued", "sending", "deferred", "held"),
    "UNDELIVERABLE": ("bounced", "failed"),
    "DELIVERED": ("delivered",),
    "EXPIRED": ("failed",),
    "REJECTED": ("suppressed",),
}


def _status(group_id: int, group: str, id_: int, name: str, description: str) -> dict[str, Any]:
    return {
        "groupId": group_id,
        "groupName": group,
        "id": id_,
        "name": name,
        "description": description,
    }


def _error(
    group_id: int, group: str, id_: int, name: str, description: str, permanent: bool
) -> dict[str, Any]:
    return {
        "groupId": group_id,
        "groupName": group,
        "id": id_,
        "name": name,
        "description": description,
        "permanent": permanent,
    }


PENDING_ACCEPTED = _status(
    1, "PENDING", 26, "PENDING_ACCEPTED", "Message accepted, pending for delivery."
)
PENDING_ENROUTE = _status(1, "PENDING", 7, "PENDING_ENROUTE", "Message sent to next instance")
UNDELIVERABLE = _status(
    2, "UNDELIVERABLE", 9, "UNDELIVERABLE_NOT_DELIVERED", "Message sent not delivered"
)
DELIVERED = _status(3, "DELIVERED", 5, "DELIVERED_TO_HANDSET", "Message delivered to handset")
EXPIRED = _status(4, "EXPIRED", 15, "EXPIRED_EXPIRED", "Message expired")
REJECTED = _status(5, "REJECTED", 90, "REJECTED_VALIDATION_FAILED", "Message rejected")

NO_ERROR = _error(0, "OK", 0, "NO_ERROR", "No Error", False)
SOFT_BOUNCE = _error(1, "HANDSET_ERRORS", 6011, "EC_SOFT_BOUNCE", "Soft bounce", False)
HARD_BOUNCE = _error(1, "HANDSET_ERRORS", 6012, "EC_HARD_BOUNCE", "Hard bounce", True)
INVALID_ADDRESS = _error(
    1, "HANDSET_ERRORS", 6006, "EC_INVALID_EMAIL_ADDRESS", "Invalid email address", True
)
SUPPRESSED = _error(
    1, "HANDSET_ERRORS", 6034, "EC_SUPPRESSED_BOUNCE", "Recipient is on the suppression list", True
)
INTERNAL = _error(
    3, "OPERATOR_ERRORS", 6013, "EC_INTERNAL_SYSTEM_ERROR", "Internal system error", True
)


# How the text of a delivery the queue stopped retrying begins (commands/delivery/outcomes.py).
GAVE_UP = "Gave up after"


@dataclass(frozen=True)
class Outcome:
    """Infobip's ``status`` and ``error`` objects of a delivery."""

    status: dict[str, Any]
    error: dict[str, Any]


def infobip_outcome(
    state: str,
    code: int | None,
    enhanced: str | None,
    bounce_class: str | None = None,
    text: str | None = None,
) -> Outcome:
    """The outcome of a delivery whose last event is ``state`` (an event type) or, while it
    is on its way, whose status is ``state``; ``code``, ``enhanced``, ``bounce_class`` and
    ``text`` are those of that event (or of the delivery's last attempt)."""
    if state == "delivered":
        return Outcome(DELIVERED, NO_ERROR)
    if state == "suppressed":
        return Outcome(REJECTED, SUPPRESSED)
    if state in ("bounced", "failed", "blocked"):
        if enhanced == "5.1.3":  # bad destination address syntax
            return Outcome(UNDELIVERABLE, INVALID_ADDRESS)
        if state == "bounced" and bounce_class == "soft":
            return Outcome(UNDELIVERABLE, SOFT_BOUNCE)
        if (code is not None and 400 <= code < 500) or (text or "").startswith(GAVE_UP):
            return Outcome(EXPIRED, SOFT_BOUNCE)  # retried until delivery.max_age
        if code is None and state == "failed":
            return Outcome(UNDELIVERABLE, INTERNAL)
        return Outcome(UNDELIVERABLE, HARD_BOUNCE)
    if state == "deferred":
        return Outcome(PENDING_ENROUTE, SOFT_BOUNCE)
    if state in ("sending", "held"):
        return Outcome(PENDING_ENROUTE, NO_ERROR)
    return Outcome(PENDING_ACCEPTED, NO_ERROR)


def infobip_time(moment: datetime | None) -> str | None:
    """``2020-09-08T05:27:59.256+0000``, Infobip's timestamps."""
    if moment is None:
        return None
    at = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"


def aware(moment: datetime) -> datetime:
    """``moment`` with a time zone (UTC when the database gave none back)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
