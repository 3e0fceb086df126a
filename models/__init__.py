"""Postern's database: SQLAlchemy 2.0 models, the engine and session factory, migrations."""

from .base import Base, UTCDateTime, utcnow
from .database import Database
from .domains import DKIMKey, Domain, RateCounter, SenderAPIKey, SMTPCredential, Webhook
from .messages import Delivery, Event, Message, Suppression
from .users import User, UserAPIKey, UserSession

__all__ = [
    "Delivery",
    "Event",
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
    "User",
    "UserAPIKey",
    "UserSession",
    "UTCDateTime",
    "utcnow",
]
