"""Idempotency records: the answer a send gave under an Idempotency-Key, kept 24 hours."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import NEVER_REUSED, Base, UTCDateTime


class IdempotencyRecord(Base):
    """One Idempotency-Key of one caller: the digest of the request it came with and the
    command's answer (its fields, as JSON), written in the transaction that ran it."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Whose key it is: "key:<sender key id>" (/api/v1) or "user:<user id>" (/api.php).
    scope: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(255))
    request_digest: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    answer: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
