"""What an Infobip send asked for beyond the message itself, one row per delivery."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigID, LongText, UTCDateTime


class InfobipMessage(Base):
    """A delivery accepted over Infobip's API: its ``bulkId`` and ``messageId`` (Infobip's
    names, as the caller gave them or as Postern made them), where and how its delivery
    report and tracking events are pushed, and the fields accepted but not acted on.

    Keyed by the delivery (no id of its own); gone with its delivery. ``reported_at`` is set
    once the one-time delivery report has been given."""

    __tablename__ = "infobip_messages"
    __table_args__ = (
        Index("ix_infobip_messages_user_id_message_id", "user_id", "message_id"),
        Index("ix_infobip_messages_user_id_bulk_id", "user_id", "bulk_id"),
        Index("ix_infobip_messages_user_id_created_at", "user_id", "created_at"),
    )

    delivery_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(Integer)
    bulk_id: Mapped[str] = mapped_column(String(100))
    message_id: Mapped[str] = mapped_column(String(200))
    campaign_reference_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    application_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    entity_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    notify_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    notify_content_type: Mapped[str | None] = mapped_column(String(100), nullable=True)
    notify: Mapped[bool] = mapped_column(Boolean, default=True)
    callback_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    intermediate_report: Mapped[bool] = mapped_column(Boolean, default=False)
    tracking_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    # JSON object: the fields accepted and kept but not acted on (landingPage*, ipPoolId, ...).
    ignored: Mapped[str] = mapped_column(LongText, default="{}")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
