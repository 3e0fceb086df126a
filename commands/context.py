"""What a handler is given: the open transaction, settings, the secret box and the caller."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.config import Config
from app.crypto import SecretBox
from models import Domain, User


@dataclass
class Context:
    db: Session
    config: Config
    box: SecretBox
    now: datetime
    user: User | None = None
    session_id: str | None = None  # the SessionID that authenticated the call, if any
    remote_addr: str | None = None
    sender: Any = None  # the SenderCaller of /api/v1 commands

    @property
    def sender_domain(self) -> Domain:
        """The domain of the sender API key that authenticated the call."""
        domain = self.db.get(Domain, self.sender.domain_id)
        if domain is None:  # pragma: no cover - a key is deleted with its domain
            raise RuntimeError("sender key without a domain")
        return domain

    @property
    def current_user(self) -> User:
        if self.user is None:  # pragma: no cover - the runner guarantees it for USER commands
            raise RuntimeError("command needs an authenticated user")
        return self.user


def format_date(value: datetime | None) -> str | None:
    """Dates in responses: 'YYYY-MM-DD HH:MM:SS' in UTC, as Octeth's API writes them."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else None
