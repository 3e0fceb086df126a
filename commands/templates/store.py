"""A user's templates: checking the parts, making, reading, changing and deleting them.

Every transport's template commands (``EmailGateway.*Template*``, ``/api/v1/templates``)
and every send that names a template (by ``TemplateID`` or by its hash) go through here.
Another user's template is answered exactly like one that does not exist.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.context import Context, format_date
from commands.errors import CommandError
from models import Template
from mta.templating import MAX_SOURCE, TemplateError, check

MISSING_ID = (1, "Missing TemplateID")
NOT_FOUND = (2, "Template not found")
BAD_NAME = (3, "Missing Name: 1 to 255 characters")
BAD_SUBJECT = 4
NO_CONTENT = (5, "Missing HTMLContent or PlainContent: a template needs at least one")
SYNTAX = 6
HASH_BYTES = 16  # 32 hexadecimal characters


@dataclass(frozen=True)
class Parts:
    """A template's (or a send's) subject, HTML and plain parts, as written."""

    subject: str
    html: str | None
    text: str | None


def syntax_problem(part: str, text: str | None) -> CommandError | None:
    """Error 6 for a part that is not a valid template, else None."""
    if text is None:
        return None
    try:
        check(text)
    except TemplateError as exc:
        where = f" at line {exc.line}" if exc.line else ""
        return CommandError(SYNTAX, f"Template syntax error in {part}{where}: {exc.message}")
    return None


def storable(text: str) -> bool:
    """Whether every database can keep ``text``: no NUL (PostgreSQL refuses it in text) and
    no lone surrogate (no UTF-8 for it)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_parts(name: str | None, parts: Parts) -> None:
    """The checks of a template being saved, in their documented order (3, 4, 5, 6)."""
    if name is not None and (not name.strip() or len(name) > 255 or not storable(name)):
        raise CommandError(*BAD_NAME)
    subject = parts.subject
    if len(subject) > 998 or "\r" in subject or "\n" in subject or not storable(subject):
        raise CommandError(BAD_SUBJECT, "Subject must be one line of at most 998 characters")
    if parts.html is None and parts.text is None:
        raise CommandError(*NO_CONTENT)
    for part, text in (
        ("Subject", parts.subject),
        ("HTMLContent", parts.html),
        ("PlainContent", parts.text),
    ):
        if text is not None and len(text) > MAX_SOURCE:
            raise CommandError(SYNTAX, f"{part} is longer than {MAX_SOURCE} characters")
        if text is not None and not storable(text):
            raise CommandError(
                SYNTAX, f"{part} holds a NUL character or a lone surrogate, which cannot be stored"
            )
        problem = syntax_problem(part, text)
        if problem is not None:
            raise problem


def find(db: Session, user_id: int, template_id: int | None) -> Template | None:
    """The user's template ``template_id``; None for a missing one or another user's."""
    if template_id is None:
        return None
    row = db.get(Template, template_id)
    return row if row is not None and row.user_id == user_id else None


def find_by_hash(db: Session, user_id: int, template_hash: str) -> Template | None:
    """The user's template whose hash is ``template_hash``; None for any other (and for a
    text no hash can be: one with NUL, which PostgreSQL cannot even compare)."""
    if "\x00" in template_hash or len(template_hash) > 64:
        return None
    row = db.scalar(select(Template).where(Template.hash == template_hash))
    return row if row is not None and row.user_id == user_id else None


def owned(ctx: Context, template_id: int | None) -> Template:
    """The caller's template; error 2 otherwise (HTTP 404 on /api/v1, as its other routes)."""
    row = find(ctx.db, ctx.current_user.id, template_id)
    if row is None:
        raise CommandError(*NOT_FOUND, http_status=404 if ctx.sender is not None else 200)
    return row


def parts_of(row: Template) -> Parts:
    return Parts(row.subject, row.html, row.text)


def create(ctx: Context, name: str, parts: Parts) -> Template:
    check_parts(name, parts)
    row = Template(
        user_id=ctx.current_user.id,
        hash=secrets.token_hex(HASH_BYTES),
        name=name.strip(),
        subject=parts.subject,
        html=parts.html,
        text=parts.text,
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    ctx.db.add(row)
    ctx.db.flush()
    return row


def update(
    ctx: Context,
    template_id: int,
    name: str | None,
    subject: str | None,
    html: str | None,
    text: str | None,
) -> Template:
    """Change the parts given; the others stay as they are."""
    row = owned(ctx, template_id)
    parts = Parts(
        row.subject if subject is None else subject,
        row.html if html is None else html,
        row.text if text is None else text,
    )
    check_parts(name, parts)
    if name is not None:
        row.name = name.strip()
    row.subject, row.html, row.text = parts.subject, parts.html, parts.text
    row.updated_at = ctx.now
    return row


def listed(ctx: Context) -> list[Template]:
    return list(
        ctx.db.scalars(
            select(Template).where(Template.user_id == ctx.current_user.id).order_by(Template.id)
        )
    )


def summary(row: Template) -> dict[str, Any]:
    """A template as GetTemplates lists it (without its parts)."""
    return {
        "TemplateID": row.id,
        "TemplateHash": row.hash,
        "Name": row.name,
        "Subject": row.subject,
        "CreatedAt": format_date(row.created_at),
        "UpdatedAt": format_date(row.updated_at),
    }


def view(row: Template) -> dict[str, Any]:
    """A template as GetTemplate answers it."""
    return {**summary(row), "HTMLContent": row.html, "PlainContent": row.text}
