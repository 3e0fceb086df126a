"""Postern's database: SQLAlchemy 2.0 models, the engine and session factory, migrations."""

from .base import Base, UTCDateTime, utcnow
from .database import Database
from .users import User, UserAPIKey, UserSession

__all__ = ["Base", "Database", "User", "UserAPIKey", "UserSession", "UTCDateTime", "utcnow"]
