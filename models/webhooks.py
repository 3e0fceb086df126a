"""Webhook deliveries: each event that matches a webhook, posted and retried by the worker."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from models.base import NEVER_REUSED, Base, BigID, LongText, UTCDateTime

# WebhookDelivery.status values. A delivery is pending while its due_at is set.
PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"


class WebhookDelivery(Base):
    """One event for one webhook: the unit the webhook sender claims, posts and retries."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id"),
        Index("ix_webhook_deliveries_domain_id_created_at", "domain_id", "created_at"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    # None: a push to the URL a message was sent with (Infobip's notifyUrl and trackingUrl,
    # commands/webhooks/infobip.py), of no registered webhook.
    webhook_id: Mapped[int | None] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=True
    )
    user_id: Mapped[int] = mapped_column(Integer)
    domain_id: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[int] = mapped_column(BigID)
    event_uid: Mapped[str] = mapped_column(String(36))  # the id receivers drop duplicates by
    event_name: Mapped[str] = mapped_column(String(16))  # in the webhook's vocabulary
    url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    # When the sender should post it next; NULL once final, so the index holds only the queue.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    attempt_log: Mapped[list[WebhookAttempt]] = relationship(
        back_populates="delivery",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="WebhookAttempt.id",
    )


class WebhookAttempt(Base):
    """One POST of a webhook delivery: when, the answer's status code, how long, what failed."""

    __tablename__ = "webhook_attempts"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    delivery: Mapped[WebhookDelivery] = relationship(back_populates="attempt_log")


class WebhookCursor(Base):
    """How far the fan-out has read the event log: one row (id 1).

    ``gaps`` (JSON ``{event id: first seen, Unix seconds}``) holds ids below ``last_event_id``
    not yet seen: a transaction that took its id earlier may still commit them.
    """

    __tablename__ = "webhook_cursor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_event_id: Mapped[int] = mapped_column(BigID, default=0)
    # Up to MAX_GAPS ids (mta/webhook_fanout.py), some 250 KB: more than MariaDB's TEXT holds.
    gaps: Mapped[str] = mapped_column(LongText, default="{}")


class WebhookSigningKey(Base):
    """A key of the installation that signs webhook POSTs: one row a purpose (``postal``:
    the RSA key of Postal-format webhooks), its PEM encrypted with the SecretBox.

    The purpose is the primary key, so two processes creating it at once end with one row.
    """

    __tablename__ = "webhook_signing_keys"

    purpose: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
