"""Postal-format webhooks: Postal's event names and payloads, and its RSA signatures.

A webhook registered with ``Format=postal`` gets what a Postal server would post: a body
``{"event","timestamp","payload","uuid"}`` built from the stored rows of the event, its
delivery and its message (so every retry posts the same bytes), signed with the
installation's RSA key (``X-Postal-Signature``: PKCS#1 v1.5 SHA-1, ``-256``: SHA-256,
``-KID``: the key's id), whose public half ``GET /.well-known/jwks.json`` serves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core.crypto import SecretBox
from core.settings import Config
from models import Database, Delivery, Event, Message, WebhookSigningKey

log = logging.getLogger("postern.webhooks")

POSTERN = "postern"
POSTAL = "postal"
FORMATS = (POSTERN, POSTAL)

# Postal's event for each event type of the log.
POSTAL_EVENTS = {
    "delivered": "MessageSent",
    "deferred": "MessageDelayed",
    "failed": "MessageDeliveryFailed",
    "blocked": "MessageDeliveryFailed",
    "held": "MessageHeld",
    "bounced": "MessageBounced",
    "opened": "MessageLoaded",
    "clicked": "MessageLinkClicked",
}
# The delivery status a status event's payload names.
_STATUS = {
    "delivered": "Sent",
    "deferred": "SoftFail",
    "failed": "HardFail",
    "blocked": "HardFail",
    "held": "Held",
}
# Event names only a Postal-format webhook may subscribe to (Postal has events for them).
POSTAL_ONLY_EVENTS = ("deferred", "failed", "held")
# Event types Postal has no event for: refused for a Postal-format webhook.
NOT_IN_POSTAL = ("unsubscribed", "complained", "not_spam", "auth_failure")

KEY_PURPOSE = "postal"
KEY_BITS = 2048


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class PostalSigner:
    """The installation's RSA key for Postal-format webhooks."""

    key: rsa.RSAPrivateKey = field(repr=False)

    @property
    def kid(self) -> str:
        """The key id, as Postal gives it (ruby-jwt's default): the hex SHA-256 of the DER
        of the public key's ``SEQUENCE {n, e}`` (PKCS#1 RSAPublicKey)."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1
        )
        return hashlib.sha256(der).hexdigest()

    def public_key_b64(self) -> str:
        """The public key as Postal shows it and django-anymail's ``POSTAL_WEBHOOK_KEY``
        takes it: the base64 of its SubjectPublicKeyInfo DER (a PEM without its lines)."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")

    def jwks(self) -> dict[str, Any]:
        """The public key as a JSON Web Key Set, as Postal serves it."""
        numbers = self.key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "n": _b64url_uint(numbers.n),
                    "e": _b64url_uint(numbers.e),
                    "use": "sig",
                    "alg": "RS256",
                    "kid": self.kid,
                }
            ]
        }

    def headers(self, body: bytes) -> dict[str, str]:
        """The signature headers of a POST of ``body`` (deterministic: the same each time)."""

        def sign(digest: hashes.HashAlgorithm) -> str:
            return base64.b64encode(self.key.sign(body, padding.PKCS1v15(), digest)).decode()

        return {
            "X-Postal-Signature-KID": self.kid,
            "X-Postal-Signature": sign(hashes.SHA1()),  # noqa: S303 - Postal's legacy header
            "X-Postal-Signature-256": sign(hashes.SHA256()),
        }


def load_signer(db: Database, box: SecretBox, config: Config) -> PostalSigner:
    """The key named by ``webhooks.postal_key_file``, else the one kept in the database,
    made on first need (see ``SignerCache``, which keeps it parsed)."""
    return SignerCache().get(db, box, config)


class SignerCache:
    """The Postal signing key, parsed once and looked up again cheaply.

    A key file is read once. The database's key row is read on each ``get`` (one primary
    key lookup) and parsed again only when it changed, so a key replaced in the database
    (docs/operations.md) is used from then on. With no row, a new key is made: two
    processes making it at once end with one (the row's key is its purpose; the one whose
    insert fails reads the other's).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._source: str | None = None  # the key file's path or the stored ciphertext
        self._signer: PostalSigner | None = None

    def get(self, db: Database, box: SecretBox, config: Config) -> PostalSigner:
        path = config.webhooks.postal_key_file
        with self._lock:
            if path:
                if self._signer is None or self._source != "file:" + path:
                    self._signer = PostalSigner(_rsa(Path(path).read_bytes(), path))
                    self._source = "file:" + path
                return self._signer
            stored = _stored_key(db) or _create_key(db, box)
            if self._signer is None or self._source != stored:
                pem = box.decrypt(stored).encode("ascii")
                self._signer = PostalSigner(_rsa(pem, "the stored Postal webhook key"))
                self._source = stored
            return self._signer


def _rsa(pem: bytes, where: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{where}: not an RSA private key")
    return key


def _create_key(db: Database, box: SecretBox) -> str:
    """A new key written to the database, or the one another process wrote first; its
    ciphertext."""
    new = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = new.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    try:
        with db.transaction() as s:
            s.add(WebhookSigningKey(purpose=KEY_PURPOSE, key_encrypted=box.encrypt(pem)))
        log.info("Postal webhook signing key created")
    except IntegrityError:
        pass  # another process made it first: its key is the one
    stored = _stored_key(db)
    if stored is None:  # pragma: no cover - written or found above
        raise RuntimeError("the Postal webhook signing key was neither written nor found")
    return stored


def _stored_key(db: Database) -> str | None:
    with db.transaction(readonly=True) as s:
        return s.scalar(
            select(WebhookSigningKey.key_encrypted).where(WebhookSigningKey.purpose == KEY_PURPOSE)
        )


def _stamp(at: datetime) -> float:
    return round(at.astimezone(UTC).timestamp(), 6)


def message_hash(
    event: Event, delivery: Delivery | None, message: Message | None
) -> dict[str, Any]:
    """The ``message`` object of a payload: the Postal API's ``{id, token}`` of the
    recipient's delivery and what the message's row holds."""
    tags = json.loads(message.tags if message is not None else event.tags or "[]")
    return {
        "id": delivery.id if delivery is not None else event.delivery_id,
        "token": delivery.token if delivery is not None else None,
        "direction": "outgoing",
        "message_id": f"{event.message_id}@{event.domain_name}",
        "to": event.recipient,
        "from": message.from_email if message is not None else None,
        "subject": message.subject if message is not None else None,
        "timestamp": _stamp(message.created_at) if message is not None else None,
        "spam_status": "NotChecked",
        "tag": tags[0] if tags else None,
    }


def postal_body(event: Event, delivery: Delivery | None, message: Message | None) -> bytes:
    """The JSON body Postal would post for ``event``; built from the rows alone."""
    name = POSTAL_EVENTS[event.type]
    stored = json.loads(event.details or "{}")
    msg = message_hash(event, delivery, message)
    created = _stamp(event.created_at)
    payload: dict[str, Any]
    if event.type == "bounced":
        payload = {
            "original_message": msg,
            # Postal describes the bounce message it received; Postern keeps a bounce's
            # code and text with the event (GetEvents), so this one is named only.
            "bounce": {
                "id": None,
                "token": None,
                "direction": "incoming",
                "message_id": None,
                "to": msg["from"],
                "from": None,
                "subject": None,
                "timestamp": created,
                "spam_status": "NotChecked",
                "tag": None,
            },
        }
    elif event.type == "clicked":
        payload = {
            "message": msg,
            "url": stored.get("url"),
            "token": event.uid,
            "ip_address": stored.get("ip"),
            "user_agent": stored.get("user_agent"),
        }
    elif event.type == "opened":
        payload = {
            "message": msg,
            "ip_address": stored.get("ip"),
            "user_agent": stored.get("user_agent"),
        }
    else:
        status = _STATUS[event.type]
        host = stored.get("host")
        # The receiving server's answer as it was given: code and text.
        output = " ".join(str(part) for part in (event.smtp_code, event.smtp_text) if part)
        details = event.smtp_text or ""
        if event.type == "delivered":
            details = f"Message for {event.recipient} accepted by {host}" if host else details
        payload = {
            "message": msg,
            "status": status,
            "details": details,
            "output": output[:512],
            "sent_with_ssl": stored.get("tls") is True,
            "timestamp": created,
            "time": stored.get("seconds"),
        }
    body = {"event": name, "timestamp": created, "payload": payload, "uuid": event.uid}
    return json.dumps(body, separators=(",", ":")).encode()
