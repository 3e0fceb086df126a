"""Administrators' commands on /api.php: Admin.Login, Admin.Users.*, Admin.User.*,
Admin.Domains.List, Admin.Domain.Suspend/Enable and Admin.Queue.

Every command but Admin.Login is Auth.ADMIN: a user who is not an administrator is answered
99999 (commands/gateway.py). Administrators see every user's rows; the users' own commands
keep seeing only their own (commands/tenancy.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import ValidationError, fields, validate
from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from commands.context import Context, format_date
from commands.delivery.queue import fail_pending
from commands.errors import CommandError
from commands.registry import Auth, command
from commands.schema import CommandSchema, RowID, param
from commands.users import (
    LoginSchema,
    UserCreateSchema,
    UserInputError,
    end_sessions,
    login_as,
    normalise_email,
    user_create,
)
from core.passwords import MIN_PASSWORD_LENGTH, hash_password
from models import Delivery, Domain, User
from models.messages import DEFERRED, HELD, QUEUED, SENDING

ENABLED, DISABLED, SUSPENDED = "Enabled", "Disabled", "Suspended"
MAX_PER_PAGE = 100


def user_status(user: User) -> str:
    if not user.enabled:
        return DISABLED
    return SUSPENDED if user.suspended else ENABLED


@command("Admin.Login", schema=LoginSchema, auth=Auth.PUBLIC)
def admin_login(ctx: Context, Username: str, Password: str, **_: Any) -> dict[str, Any]:
    """User.Login for administrators only: anyone else is refused like a wrong password (3),
    and counted by the same failed-login throttle (4)."""
    return login_as(ctx, Username, Password, admin_only=True)


# -- paging and search ------------------------------------------------------------------------


def _no_nul(value: str) -> None:
    if "\x00" in value:  # PostgreSQL text cannot hold it
        raise ValidationError("NUL")


class PagedSchema(CommandSchema):
    Page = param(
        fields.Integer(load_default=1, strict=False, validate=validate.Range(min=1, max=10**6)),
        invalid=(1, "Page must be a whole number from 1"),
    )
    PerPage = param(
        fields.Integer(
            load_default=25, strict=False, validate=validate.Range(min=1, max=MAX_PER_PAGE)
        ),
        invalid=(2, f"PerPage must be a whole number from 1 to {MAX_PER_PAGE}"),
    )
    Search = param(
        fields.String(load_default="", validate=[validate.Length(max=255), _no_nul]),
        invalid=(3, "Search must be text of at most 255 characters, without NUL"),
    )


def _like(text: str) -> str:
    """A LIKE pattern for ``text`` anywhere, its wildcards taken literally (escape ``!``)."""
    escaped = text.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"


def _paged(Page: int, PerPage: int, total: int) -> dict[str, Any]:
    return {"TotalRecords": total, "Page": Page, "PerPage": PerPage}


# -- users ------------------------------------------------------------------------------------


def admin_user_info(ctx: Context, user: User, domains: int) -> dict[str, Any]:
    cfg = ctx.config
    return {
        "UserID": user.id,
        "Username": user.username,
        "EmailAddress": user.email,
        "IsAdmin": user.is_admin,
        "Status": user_status(user),
        "SendQuota": user.send_quota,
        "SendQuotaPeriod": user.send_quota_period,
        "EffectiveSendQuota": (
            user.send_quota if user.send_quota is not None else cfg.sending.quota
        ),
        "EffectiveSendQuotaPeriod": (
            user.send_quota_period
            if user.send_quota_period is not None
            else cfg.sending.quota_period
        ),
        "DomainLimit": user.domain_limit,
        "EffectiveDomainLimit": (
            user.domain_limit if user.domain_limit is not None else cfg.domains.max_per_user
        ),
        "DomainCount": domains,
        "SignUpDate": format_date(user.created_at),
        "LastLoginDate": format_date(user.last_login_at),
    }


def _domain_counts(s: Session, user_ids: list[int]) -> dict[int, int]:
    if not user_ids:
        return {}
    rows = s.execute(
        select(Domain.user_id, func.count())
        .where(Domain.user_id.in_(user_ids))
        .group_by(Domain.user_id)
    ).all()
    return {int(uid): int(n) for uid, n in rows}


@command("Admin.Users.List", schema=PagedSchema, auth=Auth.ADMIN, readonly=True)
def users_list(ctx: Context, Page: int, PerPage: int, Search: str) -> dict[str, Any]:
    where = []
    if Search:
        pattern = _like(Search)
        where.append(
            or_(
                User.username_key.like(pattern, escape="!"),
                func.lower(User.email).like(pattern, escape="!"),
            )
        )
    s = ctx.db
    total = s.scalar(select(func.count()).select_from(User).where(*where)) or 0
    users = s.scalars(
        select(User).where(*where).order_by(User.id).offset((Page - 1) * PerPage).limit(PerPage)
    ).all()
    counts = _domain_counts(s, [u.id for u in users])
    return {
        **_paged(Page, PerPage, total),
        "Users": [admin_user_info(ctx, u, counts.get(u.id, 0)) for u in users],
    }


_USER_NOT_FOUND = (2, "User not found")


class UserIDSchema(CommandSchema):
    UserID = param(
        RowID(required=True),
        missing=(1, "Missing required parameter: UserID"),
        invalid=_USER_NOT_FOUND,
    )


def _user(ctx: Context, user_id: int) -> User:
    user = ctx.db.get(User, user_id)
    if user is None:
        raise CommandError(*_USER_NOT_FOUND)
    return user


@command("Admin.Users.Get", schema=UserIDSchema, auth=Auth.ADMIN, readonly=True)
def users_get(ctx: Context, UserID: int) -> dict[str, Any]:
    user = _user(ctx, UserID)
    counts = _domain_counts(ctx.db, [user.id])
    return {"User": admin_user_info(ctx, user, counts.get(user.id, 0))}


# Admin.User.Create: User.Create under the administrators' name (same parameters and codes).
command("Admin.User.Create", schema=UserCreateSchema, auth=Auth.ADMIN)(user_create)

# An override given as -1 is removed (the setting applies again).
RESET = -1


def _override(code: int, name: str, low: int) -> fields.Field[Any]:
    return param(
        fields.Integer(strict=False, validate=validate.Range(min=RESET, max=2**31 - 1)),
        invalid=(code, f"{name} must be a whole number from {low}, or -1 for the setting"),
    )


def _valid_status(value: str) -> None:
    if _status_of(value) not in (ENABLED, DISABLED, SUSPENDED):
        raise ValidationError("not a status")


class UserUpdateSchema(UserIDSchema):
    EmailAddress = param(fields.String(), invalid=(3, "Invalid email address"))
    Password = param(fields.String(), invalid=(4, "Invalid password"))
    Status = param(
        fields.String(validate=_valid_status),
        invalid=(5, "Status must be Enabled, Disabled or Suspended"),
    )
    SendQuota = _override(6, "SendQuota", 0)
    SendQuotaPeriod = _override(7, "SendQuotaPeriod", 1)
    DomainLimit = _override(8, "DomainLimit", 0)


def _status_of(value: str) -> str:
    return {s.lower(): s for s in (ENABLED, DISABLED, SUSPENDED)}.get(value.lower(), value)


@command("Admin.User.Update", schema=UserUpdateSchema, auth=Auth.ADMIN)
def user_update(
    ctx: Context,
    UserID: int,
    EmailAddress: str | None = None,
    Password: str | None = None,
    Status: str | None = None,
    SendQuota: int | None = None,
    SendQuotaPeriod: int | None = None,
    DomainLimit: int | None = None,
) -> dict[str, Any]:
    """Change what is given, leave the rest. Disabling ends the user's sessions; disabling
    or suspending oneself is refused (9), so that an administrator stays."""
    if SendQuotaPeriod == 0:
        raise CommandError(
            7, "SendQuotaPeriod must be a whole number from 1, or -1 for the setting"
        )
    if Password is not None and len(Password) < MIN_PASSWORD_LENGTH:
        raise CommandError(4, f"Password must be at least {MIN_PASSWORD_LENGTH} characters long")
    try:
        email = normalise_email(EmailAddress) if EmailAddress is not None else None
    except UserInputError as exc:
        raise CommandError(3, str(exc)) from None
    user = _user(ctx, UserID)
    if Status is not None:
        Status = _status_of(Status)  # in any letter case
    if Status is not None and Status != ENABLED and user.id == ctx.current_user.id:
        raise CommandError(9, "Administrators cannot disable or suspend themselves")
    if email is not None:
        user.email = email
    if Password is not None:
        user.password_hash = hash_password(Password)
    if Status is not None:
        user.enabled = Status != DISABLED
        user.suspended = Status == SUSPENDED
        if Status == DISABLED:
            end_sessions(ctx.db, user.id)
    if SendQuota is not None:
        user.send_quota = None if SendQuota == RESET else SendQuota
    if SendQuotaPeriod is not None:
        user.send_quota_period = None if SendQuotaPeriod == RESET else SendQuotaPeriod
    if DomainLimit is not None:
        user.domain_limit = None if DomainLimit == RESET else DomainLimit
    ctx.db.flush()
    counts = _domain_counts(ctx.db, [user.id])
    return {"User": admin_user_info(ctx, user, counts.get(user.id, 0))}


@command("Admin.User.Delete", schema=UserIDSchema, auth=Auth.ADMIN)
def user_delete(ctx: Context, UserID: int) -> dict[str, Any]:
    """Remove the user with everything that is theirs (sessions, keys, domains, templates,
    messages, suppressions). Mail still queued is failed first (a ``failed`` event each,
    kept in the event log for the statistics); a delivery already in a worker's hands goes
    on. Deleting oneself is refused (3)."""
    user = _user(ctx, UserID)
    if user.id == ctx.current_user.id:
        raise CommandError(3, "Administrators cannot delete themselves")
    domain_ids = ctx.db.scalars(select(Domain.id).where(Domain.user_id == user.id)).all()
    failed = 0
    for domain_id in domain_ids:
        failed += fail_pending(ctx.db, domain_id, user.id, "The account was deleted", ctx.now)
    ctx.db.delete(user)
    return {"FailedDeliveries": failed}


# -- domains ----------------------------------------------------------------------------------


def admin_domain_info(domain: Domain, username: str) -> dict[str, Any]:
    return {
        "DomainID": domain.id,
        "DomainName": domain.name,
        "UserID": domain.user_id,
        "Username": username,
        "Status": domain.status,
        "Suspended": domain.suspended,
        "CreatedDate": format_date(domain.created_at),
        "VerifiedDate": format_date(domain.verified_at),
    }


@command("Admin.Domains.List", schema=PagedSchema, auth=Auth.ADMIN, readonly=True)
def domains_list(ctx: Context, Page: int, PerPage: int, Search: str) -> dict[str, Any]:
    """Every user's domains, by DomainID; Search: a part of the domain name or of its
    owner's username."""
    where = []
    if Search:
        pattern = _like(Search)
        where.append(
            or_(Domain.name.like(pattern, escape="!"), User.username_key.like(pattern, escape="!"))
        )
    base = select(Domain, User.username).join(User, User.id == Domain.user_id).where(*where)
    s = ctx.db
    total = (
        s.scalar(
            select(func.count())
            .select_from(Domain)
            .join(User, User.id == Domain.user_id)
            .where(*where)
        )
        or 0
    )
    rows = s.execute(base.order_by(Domain.id).offset((Page - 1) * PerPage).limit(PerPage)).all()
    return {
        **_paged(Page, PerPage, total),
        "Domains": [admin_domain_info(d, name) for d, name in rows],
    }


_DOMAIN_NOT_FOUND = (2, "Domain not found")


class DomainIDSchema(CommandSchema):
    DomainID = param(
        RowID(required=True),
        missing=(1, "Missing required parameter: DomainID"),
        invalid=_DOMAIN_NOT_FOUND,
    )


def _set_domain_suspended(ctx: Context, domain_id: int, suspended: bool) -> dict[str, Any]:
    domain = ctx.db.get(Domain, domain_id)
    if domain is None:
        raise CommandError(*_DOMAIN_NOT_FOUND)
    domain.suspended = suspended
    owner = ctx.db.get(User, domain.user_id)
    return {"Domain": admin_domain_info(domain, owner.username if owner else "")}


@command("Admin.Domain.Suspend", schema=DomainIDSchema, auth=Auth.ADMIN)
def domain_suspend(ctx: Context, DomainID: int) -> dict[str, Any]:
    """Sends from the domain are refused (32); its queued mail waits until it is enabled."""
    return _set_domain_suspended(ctx, DomainID, True)


@command("Admin.Domain.Enable", schema=DomainIDSchema, auth=Auth.ADMIN)
def domain_enable(ctx: Context, DomainID: int) -> dict[str, Any]:
    """Lift a suspension: the domain's waiting mail is delivered again."""
    return _set_domain_suspended(ctx, DomainID, False)


# -- the queue --------------------------------------------------------------------------------


class NoParams(CommandSchema):
    pass


def _age(now: datetime, oldest: datetime | None) -> int | None:
    if oldest is None:
        return None
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=now.tzinfo)
    return max(0, int((now - oldest).total_seconds()))


@command("Admin.Queue", schema=NoParams, auth=Auth.ADMIN, readonly=True)
def queue(ctx: Context) -> dict[str, Any]:
    """The deliveries not yet done, per user: Queued (never tried), Deferred (to be tried
    again), Held (parked after unexpected failures: ReleaseHeldMessages), Sending (in a
    worker's hands), Due (queued or deferred whose time has come), and the oldest due
    delivery's age in seconds. A suspended user's (or domain's) mail shows here as due."""
    d = Delivery
    now = ctx.now
    due = (d.due_at <= now) & (d.status != SENDING)

    def count(cond: Any) -> Any:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    rows = ctx.db.execute(
        select(
            d.user_id,
            User.username,
            User.enabled,
            User.suspended,
            count(d.status == QUEUED),
            count(d.status == DEFERRED),
            count(d.status == HELD),
            count(d.status == SENDING),
            count(due),
            func.min(case((due, d.due_at), else_=None)),
        )
        .join(User, User.id == d.user_id)
        .where(d.status.in_([QUEUED, DEFERRED, HELD, SENDING]))
        .group_by(d.user_id, User.username, User.enabled, User.suspended)
        .order_by(d.user_id)
    ).all()
    keys = ("Queued", "Deferred", "Held", "Sending", "Due")
    users: list[dict[str, Any]] = []
    totals = dict.fromkeys(keys, 0)
    for row in rows:
        uid, name, enabled, suspended = row[:4]
        oldest: datetime | None = row[9]
        numbers = {key: int(n) for key, n in zip(keys, row[4:9], strict=True)}
        for key, n in numbers.items():
            totals[key] += n
        status = DISABLED if not enabled else SUSPENDED if suspended else ENABLED
        users.append(
            {
                "UserID": uid,
                "Username": name,
                "Status": status,
                **numbers,
                "OldestDueSeconds": _age(now, oldest),
            }
        )
    return {"Users": users, "Totals": totals}
