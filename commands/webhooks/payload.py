"""What a webhook receives: the JSON body of an event and the headers that sign it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC
from typing import Any

from models import Event

# Event types a webhook can subscribe to, as written in the event log.
WEBHOOK_EVENTS = (
    "delivered",
    "bounced",
    "blocked",
    "opened",
    "clicked",
    "unsubscribed",
    "complained",
    "not_spam",
    "auth_failure",
    # Postal-format webhooks only (MessageDelayed, MessageDeliveryFailed, MessageHeld).
    "deferred",
    "failed",
    "held",
)

# Keys of Event.details passed on to receivers (clicks and opens, unsubscribes, complaints).
_PASSED_DETAILS = ("url", "ip", "user_agent", "feedback_type", "bounce_class")

USER_AGENT = "Postern-Webhooks/1"


def event_body(event: Event, name: str) -> bytes:
    """The JSON body posted for ``event``; ``name`` is the event in the webhook's vocabulary.

    Built from the event row alone, so every retry posts the same bytes.
    """
    created = event.created_at.astimezone(UTC)
    stored = json.loads(event.details or "{}")
    details: dict[str, Any] = {}
    if event.type in ("delivered", "bounced", "blocked"):
        details = {
            "smtp_code": event.smtp_code,
            "enhanced_code": event.enhanced_code,
            "smtp_text": event.smtp_text,
        }
    details.update({k: stored[k] for k in _PASSED_DETAILS if stored.get(k) is not None})
    payload = {
        "id": event.uid,
        "event": name,
        "timestamp": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "timestamp_unix": round(created.timestamp(), 3),
        "message_id": event.message_id,
        "recipient": event.recipient,
        "domain": event.domain_name,
        "tags": json.loads(event.tags or "[]"),
        "details": details,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def standard_webhooks_secret(signing_key: str) -> str:
    """The domain's signing key as a Standard Webhooks secret (``whsec_`` + base64).

    The SigningKey shown by GetWebhooks is 32 bytes in hex; these same bytes, base64
    encoded, are the secret the ``standardwebhooks`` libraries take.
    """
    return "whsec_" + base64.b64encode(_key_bytes(signing_key)).decode()


def signature_headers(
    signing_key: str, message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The signing headers of one POST.

    ``X-Postern-Signature: t=<timestamp>,v1=<hex>``: HMAC-SHA256 of ``"<t>.<body>"`` keyed
    with the SigningKey text as shown (its 64 characters, as ASCII).

    Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature:
    v1,<base64>``): HMAC-SHA256 of ``"<id>.<timestamp>.<body>"`` keyed with the 32 bytes
    the SigningKey's hex stands for (see ``standard_webhooks_secret``).
    """
    postern = hmac.new(signing_key.encode(), b"%d." % timestamp + body, hashlib.sha256)
    signed = f"{message_id}.{timestamp}.".encode() + body
    standard = hmac.new(_key_bytes(signing_key), signed, hashlib.sha256).digest()
    return {
        "X-Postern-Signature": f"t={timestamp},v1={postern.hexdigest()}",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(standard).decode(),
    }


def _key_bytes(signing_key: str) -> bytes:
    return bytes.fromhex(signing_key)  # new_signing_key() makes 64 hex characters
