"""The suppression list: who is not sent to, and Suppression.Browse/Check/Add/Delete."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from marshmallow import fields, validate
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from commands.context import Context, format_date
from commands.errors import CommandError
from commands.registry import Auth, command
from commands.schema import MAX_ID, CommandSchema, Flag, RowID, param
from models import Domain, Suppression
from models.direct import Direct
from mta.classify import HARD, classify

ALL_DOMAINS = 0
SOURCES = ("bounce", "complaint", "unsubscribe", "manual")


_SUPPRESSED_AMONG = Direct(
    select(Suppression.email).where(
        Suppression.user_id == bindparam("user_id"),
        Suppression.email.in_(bindparam("emails", expanding=True)),
        Suppression.domain_id.in_([ALL_DOMAINS, bindparam("domain_id")]),
    )
)


def suppressed_among(
    conn: Connection, user_id: int, domain_id: int, emails: Iterable[str]
) -> set[str]:
    """The lower-cased addresses among ``emails`` that this user's mail must not go to."""
    wanted = sorted({e.lower() for e in emails})
    if not wanted:
        return set()
    params = {"user_id": user_id, "emails": wanted, "domain_id": domain_id}
    return {email for (email,) in _SUPPRESSED_AMONG.all(conn, params)}


def suppress(
    db: Session,
    user_id: int,
    email: str,
    source: str,
    reason: str,
    now: datetime,
    domain_id: int = ALL_DOMAINS,
) -> bool:
    """Add an address (idempotent); True when it was not suppressed yet."""
    email = email.strip().lower()
    exists = db.scalar(
        select(Suppression.id).where(
            Suppression.user_id == user_id,
            Suppression.email == email,
            Suppression.domain_id == domain_id,
        )
    )
    if exists:
        return False
    try:
        with db.begin_nested():
            db.add(
                Suppression(
                    user_id=user_id,
                    email=email,
                    domain_id=domain_id,
                    source=source,
                    reason=reason[:2000],
                    created_at=now,
                )
            )
    except IntegrityError:  # added at the same moment elsewhere
        return False
    return True


def suppress_bounce(
    db: Session,
    user_id: int,
    recipient: str,
    code: int | None,
    enhanced: str | None,
    text: str | None,
    now: datetime,
) -> bool:
    """Suppress a hard-bounced address for all the user's domains, with the SMTP reply as
    the reason (part of the hard-bounce rule, commands/delivery/outcomes.py)."""
    reason = f"{code or ''} {enhanced or ''} {text or ''}".strip()
    return suppress(db, user_id, recipient, "bounce", reason, now)


SOFT_RULE_REASON = "Soft bounces repeated"  # how a suppression by the soft-bounce rule starts


def suppress_soft_bounces(
    db: Session,
    user_id: int,
    recipient: str,
    count: int,
    since: datetime,
    last: str,
    now: datetime,
) -> bool:
    """Suppress an address whose soft bounces repeated over days (the soft-bounce rule,
    commands/delivery/outcomes.py), for all the user's domains; ``last`` is the last reply."""
    reason = f"{SOFT_RULE_REASON}: {count} since {since.date().isoformat()}, the last: {last}"
    return suppress(db, user_id, recipient, "bounce", reason, now)


def entry_view(row: Suppression) -> dict[str, Any]:
    return {
        "EmailAddress": row.email,
        "SuppressionSource": row.source.capitalize(),
        "Reason": row.reason,
        "DomainID": str(row.domain_id),
        "DateAdded": format_date(row.created_at),
    }


def _domain_scope(ctx: Context, domain_id: int | None, code: int) -> int:
    if domain_id is None:
        return ALL_DOMAINS
    domain = ctx.db.get(Domain, domain_id)
    if domain is None or domain.user_id != ctx.current_user.id:
        raise CommandError(code, "Domain not found or access denied")
    return domain.id


class BrowseSchema(CommandSchema):
    SearchPattern = param(fields.String(load_default=""), invalid=(5, "SearchPattern must be text"))
    Source = param(
        fields.String(validate=validate.OneOf(SOURCES)),
        invalid=(1, "Source must be one of " + ", ".join(SOURCES)),
    )
    DomainID = param(RowID(), invalid=(2, "Domain not found or access denied"))
    StartFrom = param(
        fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_ID)),
        invalid=(3, "StartFrom must be a whole number, 0 or more"),
    )
    RetrieveCount = param(
        fields.Integer(load_default=100, validate=validate.Range(1, 1000)),
        invalid=(4, "RetrieveCount must be from 1 to 1000"),
    )


@command("Suppression.Browse", schema=BrowseSchema, auth=Auth.USER, readonly=True)
def browse(
    ctx: Context,
    SearchPattern: str,
    StartFrom: int,
    RetrieveCount: int,
    Source: str | None = None,
    DomainID: int | None = None,
) -> dict[str, Any]:
    """The user's suppressed addresses, newest first; ``*`` in SearchPattern matches anything."""
    query = select(Suppression).where(Suppression.user_id == ctx.current_user.id)
    if SearchPattern:
        like = (
            SearchPattern.lower()
            .replace("\\", "\\\\")
            .replace("%", "\\%")
            .replace("_", "\\_")
            .replace("*", "%")
        )
        if "*" not in SearchPattern:
            like = f"%{like}%"
        query = query.where(Suppression.email.like(like, escape="\\"))
    if Source:
        query = query.where(Suppression.source == Source)
    if DomainID is not None:
        scope = _domain_scope(ctx, DomainID, 2)
        query = query.where(Suppression.domain_id.in_((ALL_DOMAINS, scope)))
    total = ctx.db.scalar(select(func.count()).select_from(query.subquery()))
    rows = ctx.db.scalars(
        query.order_by(Suppression.created_at.desc(), Suppression.id.desc())
        .offset(StartFrom)
        .limit(RetrieveCount)
    ).all()
    return {"TotalRecords": total, "SuppressedEmails": [entry_view(r) for r in rows]}


class CheckSchema(CommandSchema):
    EmailAddress = param(
        fields.String(required=True), missing=(1, "Missing required parameter: EmailAddress")
    )
    DomainID = param(RowID(), invalid=(2, "Domain not found or access denied"))


@command("Suppression.Check", schema=CheckSchema, auth=Auth.USER, readonly=True)
def check(ctx: Context, EmailAddress: str, DomainID: int | None = None) -> dict[str, Any]:
    query = select(Suppression).where(
        Suppression.user_id == ctx.current_user.id,
        Suppression.email == EmailAddress.strip().lower(),
    )
    if DomainID is not None:
        scope = _domain_scope(ctx, DomainID, 2)
        query = query.where(Suppression.domain_id.in_((ALL_DOMAINS, scope)))
    rows = ctx.db.scalars(query.order_by(Suppression.id)).all()
    return {"Suppressed": bool(rows), "Entries": [entry_view(r) for r in rows]}


class AddSchema(CommandSchema):
    EmailAddress = param(
        fields.Email(required=True),
        missing=(1, "Missing required parameter: EmailAddress"),
        invalid=(2, "Invalid email address"),
    )
    DomainID = param(RowID(), invalid=(3, "Domain not found or access denied"))
    Reason = param(
        fields.String(load_default="", validate=validate.Length(max=2000)),
        invalid=(4, "Reason must be at most 2000 characters"),
    )


@command("Suppression.Add", schema=AddSchema, auth=Auth.USER)
def add(
    ctx: Context, EmailAddress: str, Reason: str, DomainID: int | None = None
) -> dict[str, Any]:
    scope = _domain_scope(ctx, DomainID, 3)
    added = suppress(ctx.db, ctx.current_user.id, EmailAddress, "manual", Reason, ctx.now, scope)
    return {"Added": added}


class DeleteSchema(CommandSchema):
    EmailAddress = param(
        fields.String(required=True), missing=(1, "Missing required parameter: EmailAddress")
    )
    DomainID = param(RowID(), invalid=(3, "Domain not found or access denied"))


@command("Suppression.Delete", schema=DeleteSchema, auth=Auth.USER)
def remove(ctx: Context, EmailAddress: str, DomainID: int | None = None) -> dict[str, Any]:
    """Remove the address (for one domain when DomainID is given, else everywhere)."""
    where = [
        Suppression.user_id == ctx.current_user.id,
        Suppression.email == EmailAddress.strip().lower(),
    ]
    if DomainID is not None:
        where.append(Suppression.domain_id == _domain_scope(ctx, DomainID, 3))
    result = ctx.db.execute(delete(Suppression).where(*where))
    deleted = cast(CursorResult[Any], result).rowcount
    if not deleted:
        raise CommandError(2, "Email address is not in the suppression list")
    return {"Deleted": deleted}


REVIEW_LISTED = 1000  # entries ReviewBounces lists (it lifts them all)


class ReviewBouncesSchema(CommandSchema):
    DomainID = param(RowID(), invalid=(1, "Domain not found or access denied"))
    Lift = param(Flag(load_default=False), invalid=(2, "Lift must be true or false"))


@command("Suppression.ReviewBounces", schema=ReviewBouncesSchema, auth=Auth.USER)
def review_bounces(ctx: Context, Lift: bool, DomainID: int | None = None) -> dict[str, Any]:
    """The bounce suppressions whose recorded reply classifies now as something other than
    an address that does not exist (a full mailbox, a block, the message itself): made
    before bounces were classified. ``Lift`` removes them. Suppressions made by the
    soft-bounce rule are kept out: they were meant."""
    query = select(Suppression).where(
        Suppression.user_id == ctx.current_user.id, Suppression.source == "bounce"
    )
    if DomainID is not None:
        scope = _domain_scope(ctx, DomainID, 1)
        query = query.where(Suppression.domain_id.in_((ALL_DOMAINS, scope)))
    ids: list[int] = []
    entries: list[dict[str, Any]] = []
    for row in ctx.db.scalars(query.order_by(Suppression.id).execution_options(yield_per=500)):
        if row.reason.startswith(SOFT_RULE_REASON):
            continue
        klass = classify(None, None, row.reason)
        if klass == HARD:
            continue
        ids.append(row.id)
        if len(entries) < REVIEW_LISTED:
            entries.append({**entry_view(row), "BounceClass": klass})
    lifted = 0
    if Lift:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            result = ctx.db.execute(delete(Suppression).where(Suppression.id.in_(chunk)))
            lifted += cast(CursorResult[Any], result).rowcount
    return {"TotalRecords": len(ids), "Entries": entries, "Lifted": lifted}
