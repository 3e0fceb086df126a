"""Sender domains and what hangs off them: DKIM keys, API keys, SMTP credentials, webhooks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from models.base import NEVER_REUSED, Base, BigID, UTCDateTime

# Domain.status values
PENDING = "Pending"
ENABLED = "Enabled"

# DKIMKey.status values: a rotation's new key is "pending" (published, not signing) until
# its record verifies; then it is "active" (signing) and the key it replaces "retiring"
# (still published, not signing) until ``retire_at``; then "retired" (its private key erased).
KEY_PENDING = "pending"
KEY_ACTIVE = "active"
KEY_RETIRING = "retiring"
KEY_RETIRED = "retired"


class Domain(Base):
    __tablename__ = "domains"
    __table_args__ = (UniqueConstraint("user_id", "name"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The ASCII (IDNA) form, lower-cased.
    name: Mapped[str] = mapped_column(String(253), index=True)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    # Suspended by an administrator (whatever its verification status): sends from it are
    # refused (32) and its queued mail is not delivered until it is enabled again.
    suspended: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Per-record outcome of the last VerifyDomain, as JSON text.
    last_check: Mapped[str] = mapped_column(Text, default="")
    ownership_token: Mapped[str] = mapped_column(String(64))
    subdomain: Mapped[str] = mapped_column(String(63))
    link_tracking: Mapped[bool] = mapped_column(Boolean, default=False)
    open_tracking: Mapped[bool] = mapped_column(Boolean, default=False)
    unsubscribe_link: Mapped[bool] = mapped_column(Boolean, default=False)
    hosting_provider: Mapped[str] = mapped_column(String(100), default="")
    # 32 random bytes as 64 uppercase hex characters, encrypted.
    signing_key_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    dkim_keys: Mapped[list[DKIMKey]] = relationship(
        back_populates="domain",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="DKIMKey.id",
    )


class DKIMKey(Base):
    """A DKIM key pair; the private key is stored encrypted (PKCS#8 PEM)."""

    __tablename__ = "dkim_keys"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    selector: Mapped[str] = mapped_column(String(63))
    algorithm: Mapped[str] = mapped_column(String(16))  # "rsa" or "ed25519"
    private_key_encrypted: Mapped[str] = mapped_column(Text)
    # The p= value published in DNS (base64).
    public_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default=KEY_ACTIVE, server_default=KEY_ACTIVE)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    retire_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    domain: Mapped[Domain] = relationship(back_populates="dkim_keys")


class SenderAPIKey(Base):
    """A sender-domain API key (Bearer on /api/v1): digest for lookup, encrypted for GetAPIs."""

    __tablename__ = "sender_api_keys"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_digest: Mapped[str] = mapped_column(String(64), unique=True)
    key_encrypted: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(255))
    permissions: Mapped[str] = mapped_column(String(100))
    list_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    subscriber_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    journey_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SMTPCredential(Base):
    """SMTP AUTH credentials for a domain; the generated password is kept only as a digest."""

    __tablename__ = "smtp_credentials"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(320), unique=True)
    password_digest: Mapped[str] = mapped_column(String(64))
    from_email: Mapped[str] = mapped_column(String(320), default="")
    from_name: Mapped[str] = mapped_column(String(255), default="")
    reply_to_email: Mapped[str] = mapped_column(String(320), default="")
    reply_to_name: Mapped[str] = mapped_column(String(255), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Webhook(Base):
    __tablename__ = "webhooks"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    # Comma-separated, in the vocabulary the webhook was registered with.
    events: Mapped[str] = mapped_column(String(255))
    # The body and signatures its POSTs take: "postern" (Postern's own) or "postal".
    format: Mapped[str] = mapped_column(String(16), default="postern", server_default="postern")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When its deliveries began to fail with no success since (None while it succeeds); a
    # webhook failing for ``webhooks.disable_after_days`` is disabled (active False).
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)


class RateCounter(Base):
    """Fixed-window request counters shared by every API process (database storage)."""

    __tablename__ = "rate_counters"

    bucket: Mapped[str] = mapped_column(String(100), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigID, primary_key=True)  # Unix seconds
    hits: Mapped[int] = mapped_column(Integer, default=0)
