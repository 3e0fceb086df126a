"""Postern's database: SQLAlchemy 2.0 models, the engine and session factory, migrations."""

from models.base import Base, UTCDateTime
from models.database import Database
from models.domains import DKIMKey, Domain, RateCounter, SenderAPIKey, SMTPCredential, Webhook
from models.event_counts import EventCount
from models.idempotency import IdempotencyRecord
from models.infobip import InfobipMessage
from models.messages import Delivery, Event, Message, Suppression
from models.templates import Template
from models.users import User, UserAPIKey, UserSession
from models.webhooks import WebhookAttempt, WebhookCursor, WebhookDelivery, WebhookSigningKey

__all__ = [
    "Delivery",
    "Event",
    "EventCount",
    "IdempotencyRecord",
    "InfobipMessage",
    "Message",
    "Suppression",
    "Base",
    "Database",
    "DKIMKey",
    "Domain",
    "RateCounter",
    "SenderAPIKey",
    "SMTPCredential",
    "Template",
    "Webhook",
    "WebhookAttempt",
    "WebhookCursor",
    "WebhookSigningKey",
    "WebhookDelivery",
    "User",
    "UserAPIKey",
    "UserSession",
    "UTCDateTime",
]
