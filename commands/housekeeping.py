"""Housekeeping: deleting what has expired (login sessions, idempotency records), a bounded
batch per transaction so that no sweep holds a write lock for long."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, or_, select

from commands.idempotency import KEEP as IDEMPOTENCY_KEEP
from core.settings import Config
from models import Database, IdempotencyRecord, UserSession

log = logging.getLogger("postern.housekeeping")

CHUNK = 1000  # rows deleted per transaction


@dataclass(frozen=True)
class Swept:
    sessions: int
    idempotency: int


def sweep(db: Database, config: Config, now: datetime, *, chunk: int = CHUNK) -> Swept:
    """Delete sessions past their idle timeout or maximum age, and idempotency records older
    than 24 hours, ``chunk`` rows per transaction; the numbers deleted."""
    idle = timedelta(seconds=config.security.session_idle_timeout)
    max_age = timedelta(seconds=config.security.session_max_age)
    sessions = _delete_chunks(
        db,
        UserSession,
        or_(UserSession.last_seen_at < now - idle, UserSession.created_at < now - max_age),
        chunk,
    )
    idempotency = _delete_chunks(
        db, IdempotencyRecord, IdempotencyRecord.created_at < now - IDEMPOTENCY_KEEP, chunk
    )
    if sessions or idempotency:
        log.info(
            "expired rows deleted",
            extra={"sessions": sessions, "idempotency_records": idempotency},
        )
    return Swept(sessions, idempotency)


def _delete_chunks(
    db: Database,
    table: type[UserSession] | type[IdempotencyRecord],
    expired: ColumnElement[bool],
    chunk: int,
) -> int:
    deleted = 0
    while True:
        with db.transaction() as s:
            ids = list(s.scalars(select(table.id).where(expired).limit(chunk)))
            if ids:
                s.execute(delete(table).where(table.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < chunk:
            return deleted
