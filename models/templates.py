"""Templates: a user's stored subject, HTML and plain parts, written in the template language."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from models.base import NEVER_REUSED, Base, LongText, UTCDateTime


class Template(Base):
    """A user's template: its id (``TemplateID``), an unguessable ``hash`` (``TemplateHash``,
    FreshMail's ``templateHash``), a name, and its three parts."""

    __tablename__ = "templates"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(1000), default="")
    html: Mapped[str | None] = mapped_column(LongText, nullable=True)
    text: Mapped[str | None] = mapped_column(LongText, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
