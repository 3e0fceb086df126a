"""SMTP credentials: AddSMTP, GetSMTPs, DeleteSMTP, ResetSMTPPassword."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from marshmallow import fields, validate
from sqlalchemy import bindparam, select

from commands.context import Context, format_date
from commands.errors import CommandError
from commands.registry import Auth, command
from commands.schema import CommandSchema, RowID, param
from commands.tenancy import domain_id_param, owned_domain
from core.crypto import digests_match, token_digest
from models import Database, Domain, SMTPCredential, User
from models.direct import Direct
from models.domains import ENABLED

MASKED = "********"


PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 32  # about 190 random bits


def new_password() -> str:
    """A generated password of letters and digits only, so that no mail program's command
    line takes it for an option (``-…``); only its SHA-256 digest is stored."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def smtp_ports(ctx: Context) -> list[str]:
    return [str(p) for p in ctx.config.smtp.ports]


def submission_port(ctx: Context) -> int:
    """The STARTTLS submission port: the second configured port (587 in production)."""
    ports = ctx.config.smtp.ports
    return ports[1] if len(ports) > 1 else ports[0]


def other_info(ctx: Context) -> str:
    ports = ctx.config.smtp.ports
    parts = [f"AUTH PLAIN or LOGIN over TLS; STARTTLS on {ports[0]}"]
    if len(ports) > 1:
        parts.append(f"STARTTLS on {ports[1]}")
    if len(ports) > 2:
        parts.append(f"implicit TLS on {ports[2]}")
    return ", ".join(parts)


def credential_view(ctx: Context, row: SMTPCredential) -> dict[str, Any]:
    return {
        "SMTPID": str(row.id),
        "SMTPHost": ctx.config.smtp.hostname,
        "SMTPPorts": smtp_ports(ctx),
        "Username": row.username,
        "Password": MASKED,  # never revealed again: ResetSMTPPassword makes a new one
        "FromEmail": row.from_email,
        "FromName": row.from_name,
        "ReplyToEmail": row.reply_to_email,
        "ReplyToName": row.reply_to_name,
        "IsActive": row.active,
        "CreationDate": format_date(row.created_at),
    }


_ADD_SMTP_NOT_FOUND = (2, "Unable to retrieve the sender domain.")


class AddSMTPSchema(CommandSchema):
    DomainID = domain_id_param((1, "Required field 'DomainID' is missing."), _ADD_SMTP_NOT_FOUND)
    FromEmail = param(fields.Email(load_default=""), invalid=(3, "Invalid FromEmail"))
    FromName = param(
        fields.String(load_default="", validate=validate.Length(max=255)),
        invalid=(4, "FromName must be at most 255 characters"),
    )
    ReplyToEmail = param(fields.Email(load_default=""), invalid=(5, "Invalid ReplyToEmail"))
    ReplyToName = param(
        fields.String(load_default="", validate=validate.Length(max=255)),
        invalid=(6, "ReplyToName must be at most 255 characters"),
    )


@command("EmailGateway.AddSMTP", schema=AddSMTPSchema, auth=Auth.USER)
def add_smtp(
    ctx: Context, DomainID: int, FromEmail: str, FromName: str, ReplyToEmail: str, ReplyToName: str
) -> dict[str, Any]:
    domain = owned_domain(ctx, DomainID, _ADD_SMTP_NOT_FOUND)
    password = new_password()
    username = f"smtp-{secrets.token_hex(5)}@{domain.name}".lower()
    row = SMTPCredential(
        domain_id=domain.id,
        user_id=domain.user_id,
        username=username,
        password_digest=token_digest(password),
        from_email=FromEmail,
        from_name=FromName,
        reply_to_email=ReplyToEmail,
        reply_to_name=ReplyToName,
        created_at=ctx.now,
    )
    ctx.db.add(row)
    ctx.db.flush()
    return {
        "NewSMTPID": str(row.id),
        "SMTP": {
            "SMTPID": str(row.id),
            "SMTPHost": ctx.config.smtp.hostname,
            "SMTPPorts": smtp_ports(ctx),
            "Username": username,
            "Password": password,
            "OtherSMTPInfo": other_info(ctx),
        },
    }


_GET_SMTPS_NOT_FOUND = (2, "Unable to retrieve sender domain details.")


class GetSMTPsSchema(CommandSchema):
    DomainID = domain_id_param(
        (1, "Missing required parameter 'DomainID'."),
        _GET_SMTPS_NOT_FOUND,
    )


@command("EmailGateway.GetSMTPs", schema=GetSMTPsSchema, auth=Auth.USER, readonly=True)
def get_smtps(ctx: Context, DomainID: int) -> dict[str, Any]:
    domain = owned_domain(ctx, DomainID, _GET_SMTPS_NOT_FOUND)
    rows = ctx.db.scalars(
        select(SMTPCredential)
        .where(SMTPCredential.domain_id == domain.id)
        .order_by(SMTPCredential.id)
    ).all()
    return {"SMTPs": [credential_view(ctx, r) for r in rows]}


def owned_credential(ctx: Context, smtp_id: int, not_found: tuple[int, str]) -> SMTPCredential:
    """The caller's SMTP credential ``smtp_id``; anyone else's answers like a missing one."""
    row = ctx.db.get(SMTPCredential, smtp_id)
    domain = ctx.db.get(Domain, row.domain_id) if row is not None else None
    if row is None or domain is None or domain.user_id != ctx.current_user.id:
        raise CommandError(*not_found)
    return row


_DELETE_SMTP_NOT_FOUND = (2, "SMTP configuration not found or user does not have permission")


class DeleteSMTPSchema(CommandSchema):
    smtpid = param(
        RowID(required=True),
        missing=(1, "Required field is missing"),
        invalid=_DELETE_SMTP_NOT_FOUND,
    )


@command("EmailGateway.DeleteSMTP", schema=DeleteSMTPSchema, auth=Auth.USER)
def delete_smtp(ctx: Context, smtpid: int) -> dict[str, Any]:
    row = owned_credential(ctx, smtpid, _DELETE_SMTP_NOT_FOUND)
    ctx.db.delete(row)
    return {}


_RESET_SMTP_PASSWORD_NOT_FOUND = (2, "SMTP configuration not found or access denied")


class ResetSMTPPasswordSchema(CommandSchema):
    smtpid = param(
        RowID(required=True),
        missing=(1, "Missing required parameter 'smtpid'"),
        invalid=_RESET_SMTP_PASSWORD_NOT_FOUND,
    )


@command("EmailGateway.ResetSMTPPassword", schema=ResetSMTPPasswordSchema, auth=Auth.USER)
def reset_smtp_password(ctx: Context, smtpid: int) -> dict[str, Any]:
    row = owned_credential(ctx, smtpid, _RESET_SMTP_PASSWORD_NOT_FOUND)
    password = new_password()
    row.password_digest = token_digest(password)
    return {
        "SMTP": {
            "SMTPID": str(row.id),
            "Server": ctx.config.smtp.hostname,
            "Port": submission_port(ctx),
            "Username": row.username,
            "Password": password,
        }
    }


@dataclass(frozen=True)
class SMTPCaller:
    """Who an SMTP AUTH session belongs to."""

    credential_id: int
    username: str
    domain_id: int
    domain_name: str
    user_id: int
    # The digest of the password the session logged in with: a reset changes the stored one.
    password_digest: str = field(default="", repr=False, compare=False)


# What a session's credential is now: one read by primary key, at each MAIL FROM.
_STILL_VALID = Direct(
    select(
        SMTPCredential.password_digest,
        SMTPCredential.active,
        Domain.status,
        Domain.suspended.label("domain_suspended"),
        User.enabled,
        User.suspended,
    )
    .join(
        Domain,
        (Domain.id == SMTPCredential.domain_id) & (Domain.user_id == SMTPCredential.user_id),
    )
    .join(User, User.id == SMTPCredential.user_id)
    .where(SMTPCredential.id == bindparam("credential_id"))
)


# credential_state's answers besides VALID
VALID, REVOKED, SUSPENDED_USER, SUSPENDED_DOMAIN = "valid", "revoked", "suspended", "domain"


def credential_state(db: Database, caller: SMTPCaller) -> str:
    """What the credential a session logged in with is now, at its MAIL FROM: REVOKED when
    it would not log the session in again (deleted, its password reset, it, its user or its
    domain disabled: it stops the open sessions), SUSPENDED_USER or SUSPENDED_DOMAIN when
    an administrator suspended its user or domain, else VALID."""
    with db.read_connection() as conn:
        row = _STILL_VALID.mapping(conn, {"credential_id": caller.credential_id})
    if not (
        row is not None
        and digests_match(row["password_digest"], caller.password_digest)
        and bool(row["active"])
        and bool(row["enabled"])
        and row["status"] == ENABLED
    ):
        return REVOKED
    if row["suspended"]:
        return SUSPENDED_USER
    if row["domain_suspended"]:
        return SUSPENDED_DOMAIN
    return VALID


def still_valid(db: Database, caller: SMTPCaller) -> bool:
    """Whether the credential a session logged in with would still log it in (a
    suspended user's or domain's would: ``credential_state`` tells them apart)."""
    return credential_state(db, caller) != REVOKED


def authenticate_smtp(db: Database, username: str, password: str) -> tuple[SMTPCaller | None, str]:
    """The credential for a username and password, or None and why (for the log only).

    The password is checked against its stored digest in constant time; a user's disabled
    account or a domain not yet enabled refuses the login like a wrong password does.
    """
    digest = token_digest(password)
    with db.transaction(readonly=True) as s:
        row = s.execute(
            select(SMTPCredential, Domain.status, Domain.name, User.enabled)
            .join(
                Domain,
                (Domain.id == SMTPCredential.domain_id)
                & (Domain.user_id == SMTPCredential.user_id),
            )
            .join(User, User.id == SMTPCredential.user_id)
            .where(SMTPCredential.username == username.strip().lower())
        ).first()
    if row is None:
        digests_match(digest, token_digest("postern-no-such-user"))  # same work either way
        return None, "unknown username"
    cred, domain_status, domain_name, user_enabled = row
    if not digests_match(cred.password_digest, digest):
        return None, "wrong password"
    if not cred.active or not user_enabled:
        return None, "credential or account disabled"
    if domain_status != ENABLED:
        return None, "domain not enabled"
    caller = SMTPCaller(
        cred.id, cred.username, cred.domain_id, domain_name, cred.user_id, cred.password_digest
    )
    return caller, ""
