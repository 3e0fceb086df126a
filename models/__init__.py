"""Postern's database: SQLAlchemy 2.0 models, the engine and session factory, migrations."""

from .base import Base, UTCDateTime, utcnow
from .database import Database
from .domains import DKIMKey, Domain, RateCounter, SenderAPIKey, SMTPCredential, Webhook
from .event_counts import EventCount
from .messages import Delivery, Event, Message, Suppression
from .users import User, UserAPIKey, UserSession
from .webhooks import WebhookAttempt, WebhookCursor, WebhookDelivery

__all__ = [
    "Delivery",
    "Event",
    "EventCount",
    "Message",
    "Suppression",
    "Base",
    "Database",
    "DKIMKey",
    "Domain",
    "RateCounter",
    "SenderAPIKey",
    "SMTPCredential",
    "Webhook",
    "WebhookAttempt",
    "WebhookCursor",
    "WebhookDelivery",
    "User",
    "UserAPIKey",
    "UserSession",
    "UTCDateTime",
    "utcnow",
]
