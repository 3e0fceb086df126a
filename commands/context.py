"""What a handler is given: the open transaction, settings, the secret box and the caller."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from commands.auth import SenderCaller
from commands.ratelimit import FailureThrottle
from core.crypto import SecretBox
from core.settings import Config
from models import Database, Domain, User
from models.database import UnitOfWork


@dataclass
class Context:
    # The command's own transaction. It begins at the first statement, so slow work
    # (DNS, key generation) done before touching it holds no lock. ``db`` is its ORM
    # session, ``conn`` its Core connection (for Direct statements on hot paths).
    work: UnitOfWork
    config: Config
    box: SecretBox
    now: datetime
    user: User | None = None
    session_id: str | None = None  # the SessionID that authenticated the call, if any
    remote_addr: str | None = None
    sender: SenderCaller | None = None  # the sender API key of /api/v1 commands
    database: Database | None = None  # for a short read transaction of its own
    # Deliveries accepted per user earlier in this transaction (SMTP submissions committed
    # together), which the quota's count, read in a transaction of its own, cannot see yet.
    accepted: dict[int, int] | None = None
    # Failed logins, counted where every process sees them (User.Login's).
    login_throttle: FailureThrottle | None = None

    @property
    def db(self) -> Session:
        return self.work.session

    @property
    def conn(self) -> Connection:
        return self.work.conn

    def read(self) -> AbstractContextManager[Session]:
        """A separate, short read transaction (to read before slow work, then write in db)."""
        if self.database is None:  # pragma: no cover - the runner always sets it
            raise RuntimeError("context without a database")
        return self.database.transaction(readonly=True)

    @property
    def sender_domain(self) -> Domain:
        """The domain of the sender API key that authenticated the call.

        Loaded with the key, before this command's transaction: read its fields, and
        re-read it through ``db`` before changing it.
        """
        sender = self.current_sender
        domain = sender.domain or self.db.get(Domain, sender.domain_id)
        if domain is None:  # pragma: no cover - a key is deleted with its domain
            raise RuntimeError("sender key without a domain")
        return domain

    @property
    def current_sender(self) -> SenderCaller:
        if self.sender is None:  # pragma: no cover - the runner guarantees it for SENDER commands
            raise RuntimeError("command needs a sender API key")
        return self.sender

    @property
    def current_user(self) -> User:
        if self.user is None:  # pragma: no cover - the runner guarantees it for USER commands
            raise RuntimeError("command needs an authenticated user")
        return self.user


def format_date(value: datetime | None) -> str | None:
    """Dates in responses: 'YYYY-MM-DD HH:MM:SS' in UTC, as Octeth's API writes them."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else None
