"""What a handler is given: the open transaction, settings, the secret box and the caller."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from app.config import Config
from app.crypto import SecretBox
from models import User


@dataclass
class Context:
    db: Session
    config: Config
    box: SecretBox
    now: datetime
    user: User | None = None
    session_id: str | None = None  # the SessionID that authenticated the call, if any
    remote_addr: str | None = None

    @property
    def current_user(self) -> User:
        if self.user is None:  # pragma: no cover - the runner guarantees it for USER commands
            raise RuntimeError("command needs an authenticated user")
        return self.user


def format_date(value: datetime | None) -> str | None:
    """Dates in responses: 'YYYY-MM-DD HH:MM:SS' in UTC, as Octeth's API writes them."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else None
