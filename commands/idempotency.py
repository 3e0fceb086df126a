"""Idempotency-Key: a send retried with the key it was first made with is answered as it was
the first time, and is not sent again.

A transport hands the key a caller sent (the HTTP ``Idempotency-Key`` header) to
``Gateway.run``; commands registered with ``idempotent=True`` (the sends) honour it. The key
belongs to the caller: a sender API key (``/api/v1``) or a user (``/api.php``), so two
tenants' keys never meet. In the transaction that runs the command, a record of the key is
inserted first (a concurrent request with the same key waits on the unique index until
this one commits, then finds its answer), and the command's answer is written beside it.
For 24 hours the same key with the same request answers that answer again without running
the command; with another request it is refused (``IDEMPOTENCY_CONFLICT``). A request the
command refused leaves no record, and may be tried again with the same key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from commands.errors import CommandError
from models import IdempotencyRecord

KEEP = timedelta(hours=24)  # how long a key's answer is given again
MAX_KEY_LENGTH = 255
IDEMPOTENCY_INVALID = 100400
IDEMPOTENCY_CONFLICT = 100409
IN_PROGRESS, ANSWERED = 0, 200  # a record's status: no answer yet (never committed), answered
_KEY = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
# Parameters that say who calls or how to answer, not what to do: not part of the request.
_NOT_THE_REQUEST = frozenset({"sessionid", "apikey", "senderapikey", "responseformat", "command"})


@dataclass(frozen=True)
class IdempotencyClaim:
    """One request made under an Idempotency-Key: whose key, the key, the request's digest."""

    scope: str
    key: str
    digest: str


def valid_key(key: str) -> str:
    """The key as sent, or CommandError IDEMPOTENCY_INVALID (HTTP 400)."""
    key = key.strip()
    if len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise CommandError(
            IDEMPOTENCY_INVALID,
            f"Invalid Idempotency-Key: 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            http_status=400,
        )
    return key


def request_digest(command_name: str, params: Mapping[str, Any]) -> str:
    """SHA-256 of the command and its parameters (names in any letter case, credentials and
    the answer format left out): what must be the same for a key's answer to be given again."""
    request = {
        str(name).lower(): value
        for name, value in params.items()
        if str(name).lower() not in _NOT_THE_REQUEST
    }
    text = json.dumps([command_name.lower(), request], sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def claim(conn: Connection, wanted: IdempotencyClaim, now: datetime) -> dict[str, Any] | None:
    """In the command's transaction: the answer to give again (the key was used within 24
    hours for this request), CommandError IDEMPOTENCY_CONFLICT (for another request), or
    None once the key is this request's (its record inserted, to be completed by ``record``).
    """
    where = (IdempotencyRecord.scope == wanted.scope, IdempotencyRecord.key == wanted.key)
    for _ in range(4):
        row = conn.execute(
            select(
                IdempotencyRecord.request_digest,
                IdempotencyRecord.status,
                IdempotencyRecord.answer,
                IdempotencyRecord.created_at,
            ).where(*where)
        ).first()
        if row is not None and row.status == IN_PROGRESS:
            # Inserted just below by this transaction: no other can see a record before
            # its answer is written, in the same transaction.
            return None
        if row is not None and row.created_at > now - KEEP:
            if row.request_digest != wanted.digest:
                raise CommandError(
                    IDEMPOTENCY_CONFLICT,
                    "Idempotency-Key was already used with a different request",
                    http_status=409,
                )
            answer: dict[str, Any] = json.loads(row.answer)
            return answer
        if row is not None:
            conn.execute(delete(IdempotencyRecord).where(*where))  # expired: the key is free
        values = {
            "scope": wanted.scope,
            "key": wanted.key,
            "request_digest": wanted.digest,
            "status": IN_PROGRESS,
            "answer": "",
            "created_at": now,
        }
        # Waits for a concurrent request holding the same key, then inserts nothing if it
        # committed: its answer is read on the next turn.
        backend = conn.dialect.name
        if backend == "postgresql":
            statement: Any = postgresql.insert(IdempotencyRecord).on_conflict_do_nothing()
        elif backend == "sqlite":
            statement = sqlite.insert(IdempotencyRecord).on_conflict_do_nothing()
        elif backend in ("mysql", "mariadb"):
            statement = mysql.insert(IdempotencyRecord).prefix_with("IGNORE")
        else:  # pragma: no cover - Postern runs on these three
            statement = insert(IdempotencyRecord)
        conn.execute(statement, values)
    raise CommandError(  # pragma: no cover - a record swept between two statements, thrice
        IDEMPOTENCY_CONFLICT, "Idempotency-Key is in use: try again", http_status=409
    )


def record(conn: Connection, wanted: IdempotencyClaim, answer: Mapping[str, Any]) -> None:
    """Keep the command's answer with the key (in the transaction that ran it)."""
    conn.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.scope == wanted.scope, IdempotencyRecord.key == wanted.key)
        .values(status=ANSWERED, answer=json.dumps(answer, default=str))
    )


def release(conn: Connection, wanted: IdempotencyClaim) -> None:
    """Let go of the key of a request the command refused (and whose writes it keeps)."""
    conn.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.scope == wanted.scope, IdempotencyRecord.key == wanted.key
        )
    )
