"""Sender domains: AddDomain, GetDomain(s), UpdateDomain, DeleteDomain, VerifyDomain."""

from __future__ import annotations

import json
import re
import secrets
from datetime import timedelta
from typing import Any

import idna
from marshmallow import fields, validate
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from commands.context import Context, format_date
from commands.delivery.queue import fail_pending, fail_pending_in_batches
from commands.domains import dkim, rotation
from commands.domains.dns_records import (
    check_records,
    make_resolver,
    required_records,
    return_path_host,
    tracking_host,
    verify_budget,
)
from commands.errors import CommandError
from commands.registry import Auth, command
from commands.schema import CommandSchema, Flag, param
from commands.tenancy import domain_id_param, owned_domain
from core.crypto import new_signing_key
from core.settings import sqlite_in_memory
from models import Domain
from models.database import UnitOfWork
from models.domains import ENABLED, KEY_ACTIVE, PENDING

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LABEL_ANY_CASE = re.compile(r"^(?!-)[a-zA-Z0-9-]{1,63}(?<!-)$")


def normalise_domain_name(raw: str) -> str | None:
    """The ASCII (IDNA) lower-case form of a domain name, or None when it is not one."""
    name = raw.strip().rstrip(".")
    if not name or len(name) > 253:
        return None
    try:
        ascii_name = idna.encode(name, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        return None
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or len(labels) < 2:
        return None
    if not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        return None
    return ascii_name


def _statuses(domain: Domain) -> dict[str, str]:
    """Per-record statuses from the last VerifyDomain (Pending before the first)."""
    last = json.loads(domain.last_check) if domain.last_check else {}

    def status(purpose: str) -> str:
        if purpose not in last:
            return "Pending"
        return "Verified" if last[purpose] else "Failed"

    return {
        "VerificationStatus": "Verified" if domain.verified_at else "Pending",
        "DKIMStatus": status("dkim"),
        "SPFStatus": status("spf"),
    }


def domain_view(ctx: Context, domain: Domain) -> dict[str, Any]:
    return {
        "DomainID": domain.id,
        "DomainName": domain.name,
        "Status": domain.status,
        "IsActive": domain.status == ENABLED,
        "Verified": domain.verified_at is not None,
        **_statuses(domain),
        "LinkTracking": domain.link_tracking,
        "OpenTracking": domain.open_tracking,
        "UnsubscribeLink": domain.unsubscribe_link,
        "HostingProvider": domain.hosting_provider,
        "Subdomain": domain.subdomain,
        "ReturnPathHost": return_path_host(domain),
        "TrackingHost": tracking_host(domain),
        "DKIMSelectors": [k.selector for k in domain.dkim_keys if k.status == KEY_ACTIVE],
        "DKIMKeys": [
            {
                "Selector": k.selector,
                "Algorithm": k.algorithm,
                "Status": k.status.capitalize(),
                "CreationDate": format_date(k.created_at),
                "ActivationDate": format_date(k.activated_at),
                "RetireDate": format_date(k.retire_at),
                "RetiredDate": format_date(k.retired_at),
            }
            for k in domain.dkim_keys
        ],
        "CreationDate": format_date(domain.created_at),
        "VerifiedDate": format_date(domain.verified_at),
        "LastCheckDate": format_date(domain.last_checked_at),
        "DNSRecords": [r.as_dict() for r in required_records(domain, ctx.config)],
    }


class AddDomainSchema(CommandSchema):
    DomainName = param(
        fields.String(required=True),
        missing=(1, "Missing required parameter: DomainName"),
        invalid=(2, "Invalid domain name provided"),
    )


@command("EmailGateway.AddDomain", schema=AddDomainSchema, auth=Auth.USER)
def add_domain(ctx: Context, DomainName: str) -> dict[str, Any]:
    name = normalise_domain_name(DomainName)
    if name is None:
        raise CommandError(2, "Invalid domain name provided")
    cfg = ctx.config.domains
    user = ctx.current_user
    most = user.domain_limit if user.domain_limit is not None else cfg.max_per_user
    # The refusals first, in a short read (generating keys takes a while: a request that is
    # refused never starts it); then the keys, with no transaction open; then the same
    # checks again in the transaction that adds the domain (another request may have added
    # one in between).
    with ctx.read() as s:
        _check_can_add(s, user.id, name, most)
    keys = [dkim.new_key(ctx.box, cfg.dkim_selector, "rsa", cfg.dkim_rsa_bits)]
    if cfg.dkim_ed25519:
        keys.append(dkim.new_key(ctx.box, cfg.dkim_ed25519_selector, "ed25519"))
    _check_can_add(ctx.db, user.id, name, most)
    domain = Domain(
        user_id=user.id,
        name=name,
        status=PENDING if cfg.require_verification else ENABLED,
        ownership_token=secrets.token_hex(16),
        subdomain=cfg.subdomain,
        signing_key_encrypted=ctx.box.encrypt(new_signing_key()),
        created_at=ctx.now,
    )
    for key in keys:
        key.created_at = key.activated_at = ctx.now
    domain.dkim_keys.extend(keys)
    ctx.db.add(domain)
    ctx.db.flush()
    return {"NewSenderDomainID": domain.id, "Domain": domain_view(ctx, domain)}


def _check_can_add(s: Session, user_id: int, name: str, most: int) -> None:
    """AddDomain's refusals: the name is in the user's account already (2), or the user has
    ``most`` domains (3)."""
    if s.scalar(select(Domain.id).where(Domain.user_id == user_id, Domain.name == name)):
        raise CommandError(2, "Invalid domain name provided: it is already in your account")
    count = s.execute(
        select(func.count()).select_from(Domain).where(Domain.user_id == user_id)
    ).scalar_one()
    if count >= most:
        raise CommandError(3, "User has reached the maximum number of sender domains allowed")


_GET_DOMAIN_NOT_FOUND = (2, "Unable to retrieve domain information")


class DomainIDSchema(CommandSchema):
    DomainID = domain_id_param((1, "Required parameter missing: DomainID"), _GET_DOMAIN_NOT_FOUND)


@command("EmailGateway.GetDomain", schema=DomainIDSchema, auth=Auth.USER, readonly=True)
def get_domain(ctx: Context, DomainID: int) -> dict[str, Any]:
    domain = owned_domain(ctx, DomainID, _GET_DOMAIN_NOT_FOUND)
    return {"Domain": domain_view(ctx, domain)}


class NoParams(CommandSchema):
    pass


@command("EmailGateway.GetDomains", schema=NoParams, auth=Auth.USER, readonly=True)
def get_domains(ctx: Context) -> dict[str, Any]:
    rows = ctx.db.scalars(
        select(Domain).where(Domain.user_id == ctx.current_user.id).order_by(Domain.id)
    ).all()
    out = []
    for d in rows:
        view = domain_view(ctx, d)
        view.pop("DNSRecords")
        out.append({**view, "DomainID": str(d.id), "Active": d.status == ENABLED})
    return {"Domains": out}


def _flag_text(value: bool) -> str:
    return "1" if value else "0"


_UPDATE_DOMAIN_NOT_FOUND = (5, "Unable to retrieve sender domain information.")


class UpdateDomainSchema(CommandSchema):
    DomainID = domain_id_param(
        (1, "Required field 'DomainID' is missing."),
        _UPDATE_DOMAIN_NOT_FOUND,
    )
    LinkTracking = param(Flag(), invalid=(6, "LinkTracking must be 1 or 0"))
    OpenTracking = param(Flag(), invalid=(7, "OpenTracking must be 1 or 0"))
    UnsubscribeLink = param(Flag(), invalid=(8, "UnsubscribeLink must be 1 or 0"))
    HostingProvider = param(
        fields.String(validate=validate.Length(max=100)),
        invalid=(9, "HostingProvider must be at most 100 characters"),
    )
    Subdomain = param(
        fields.String(validate=validate.Regexp(_LABEL_ANY_CASE)),
        invalid=(10, "Invalid Subdomain: one DNS label of a-z, 0-9 and -"),
    )


@command("EmailGateway.UpdateDomain", schema=UpdateDomainSchema, auth=Auth.USER)
def update_domain(ctx: Context, DomainID: int, **changes: Any) -> dict[str, Any]:
    domain = owned_domain(ctx, DomainID, _UPDATE_DOMAIN_NOT_FOUND)
    if "LinkTracking" in changes:
        domain.link_tracking = changes["LinkTracking"]
    if "OpenTracking" in changes:
        domain.open_tracking = changes["OpenTracking"]
    if "UnsubscribeLink" in changes:
        domain.unsubscribe_link = changes["UnsubscribeLink"]
    if "HostingProvider" in changes:
        domain.hosting_provider = changes["HostingProvider"]
    subdomain = changes.get("Subdomain", "").lower()
    if subdomain and subdomain != domain.subdomain:
        # The return-path, DKIM and tracking hosts move: their records must be checked again.
        domain.subdomain = subdomain
        domain.last_check = ""
        if ctx.config.domains.require_verification:
            domain.status = PENDING
            domain.verified_at = None
    return {
        "Domain": {
            "DomainID": str(domain.id),
            "LinkTracking": _flag_text(domain.link_tracking),
            "OpenTracking": _flag_text(domain.open_tracking),
            "UnsubscribeLink": _flag_text(domain.unsubscribe_link),
            "HostingProvider": domain.hosting_provider,
            "Subdomain": domain.subdomain,
            "Status": domain.status,
        }
    }


_DELETE_DOMAIN_NOT_FOUND = (
    2,
    "Domain not found or user does not have permission to delete the domain",
)


class DeleteDomainSchema(CommandSchema):
    DomainID = domain_id_param(
        (1, "Missing required parameter: DomainID"),
        _DELETE_DOMAIN_NOT_FOUND,
    )


@command("EmailGateway.DeleteDomain", schema=DeleteDomainSchema, auth=Auth.USER)
def delete_domain(ctx: Context, DomainID: int) -> dict[str, Any]:
    """Remove the domain with its keys, credentials and webhooks; fail its queued mail."""
    domain = owned_domain(ctx, DomainID, _DELETE_DOMAIN_NOT_FOUND)

    # Its messages and events stay (for statistics); what was still queued fails.
    fail_pending(ctx.db, domain.id, domain.user_id, "The sending domain was deleted", ctx.now)
    ctx.db.delete(domain)
    return {}


_VERIFY_DOMAIN_NOT_FOUND = (2, "Unable to retrieve the sender domain information.")


class VerifyDomainSchema(CommandSchema):
    DomainID = domain_id_param(
        (1, "Required field 'DomainID' is missing."),
        _VERIFY_DOMAIN_NOT_FOUND,
    )


@command("EmailGateway.VerifyDomain", schema=VerifyDomainSchema, auth=Auth.USER)
def verify_domain(ctx: Context, DomainID: int) -> dict[str, Any]:
    """Query DNS for every record; enable the domain when all required ones are there.

    The records are read in a short transaction of their own and DNS is asked with no
    transaction open; only the outcome is written. A timeout or server failure leaves the
    domain as it was and says so per record.
    """
    with ctx.read() as s:
        read_ctx = Context(
            work=UnitOfWork.of(s), config=ctx.config, box=ctx.box, now=ctx.now, user=ctx.user
        )
        domain = owned_domain(read_ctx, DomainID, _VERIFY_DOMAIN_NOT_FOUND)
        records = required_records(domain, ctx.config)
    budget = verify_budget(ctx.config)
    results = check_records(records, make_resolver(ctx.config), budget)

    domain = owned_domain(ctx, DomainID, _VERIFY_DOMAIN_NOT_FOUND)
    if required_records(domain, ctx.config) != records:
        raise CommandError(
            11, "The domain changed while it was being checked (Subdomain or keys); try again"
        )
    required = [r for r in results if r.record.required]
    unknown = any(r.error for r in required)
    all_verified = all(r.verified for r in required)
    taken = ctx.db.scalar(
        select(Domain.id).where(
            Domain.name == domain.name,
            Domain.user_id != domain.user_id,
            Domain.verified_at.is_not(None),
        )
    )
    domain.last_checked_at = ctx.now
    if not unknown:
        # A rotation's pending or retiring DKIM record does not decide DKIMStatus.
        domain.last_check = json.dumps(
            {
                r.record.purpose: r.verified
                for r in results
                if not r.error and (r.record.required or r.record.purpose != "dkim")
            }
        )
        if all_verified and not taken:
            domain.verified_at = domain.verified_at or ctx.now
            domain.status = ENABLED
        else:
            domain.verified_at = None
            if ctx.config.domains.require_verification:
                domain.status = PENDING
    activated = []
    if rotation.in_progress(domain):
        verified = {
            r.record.host: (None if r.error else r.verified)
            for r in results
            if r.record.purpose == "dkim"
        }
        if rotation.pending_verified(domain, verified):
            grace = timedelta(days=ctx.config.domains.dkim_retire_after_days)
            activated = rotation.activate(domain, ctx.now, grace)
    out: dict[str, Any] = {
        "Domain": {"DomainID": str(domain.id), "DomainName": domain.name, "Status": domain.status},
        "DNSVerificationResults": [r.as_dict() for r in results],
    }
    if activated:
        out["DKIMKeyActivated"] = activated
    if unknown:
        timed_out = any(r.error == "timeout" for r in required)
        out["Note"] = (
            "DNS did not answer for every required record: the look-ups timed out "
            f"(timeout: DNS is given {budget:g} seconds in all) or a server failed; "
            "nothing was changed; try again"
            if timed_out
            else "DNS did not answer for every required record (server failure): "
            "nothing was changed; try again"
        )
    elif taken and all_verified:
        out["Note"] = "This domain is already verified in another account"
    return out


_CLEAR_NOT_FOUND = (2, "Unable to retrieve sender domain")


class ClearDomainQueueSchema(CommandSchema):
    DomainID = domain_id_param((1, "Missing required parameter: DomainID"), _CLEAR_NOT_FOUND)


@command(
    "EmailGateway.ClearDomainQueue", schema=ClearDomainQueueSchema, auth=Auth.USER, readonly=True
)
def clear_domain_queue(ctx: Context, DomainID: int) -> dict[str, Any]:
    """Fail the domain's queued deliveries in batches, each in a write transaction of its own
    (the command's own transaction only reads: whose the domain is)."""
    domain = owned_domain(ctx, DomainID, _CLEAR_NOT_FOUND)
    reason = "Removed from the queue by ClearDomainQueue"
    if ctx.database is None or sqlite_in_memory(ctx.database.url):
        # In memory, SQLite has one engine whose every transaction writes: this one.
        return {"ClearedCount": fail_pending(ctx.db, domain.id, domain.user_id, reason, ctx.now)}
    return {
        "ClearedCount": fail_pending_in_batches(
            ctx.database, domain.id, domain.user_id, reason, ctx.now
        )
    }


_ROTATE_NOT_FOUND = (2, "Unable to retrieve sender domain information")
_ROTATE_IN_PROGRESS = (
    3,
    "A DKIM key rotation is already in progress for this domain: publish the new record "
    "and verify the domain first",
)


class RotateDKIMKeySchema(CommandSchema):
    DomainID = domain_id_param((1, "Missing required parameter: DomainID"), _ROTATE_NOT_FOUND)


@command("EmailGateway.RotateDKIMKey", schema=RotateDKIMKeySchema, auth=Auth.USER)
def rotate_dkim_key(ctx: Context, DomainID: int) -> dict[str, Any]:
    """Start a DKIM key rotation: a new key beside each signing one, at a new selector,
    published but not signing until VerifyDomain finds its record (commands/domains/
    rotation.py). The keys are made with no transaction open, as AddDomain's are."""
    with ctx.read() as s:
        read_ctx = Context(
            work=UnitOfWork.of(s), config=ctx.config, box=ctx.box, now=ctx.now, user=ctx.user
        )
        domain = owned_domain(read_ctx, DomainID, _ROTATE_NOT_FOUND)
        if rotation.in_progress(domain):
            raise CommandError(*_ROTATE_IN_PROGRESS)
        planned = rotation.plan(domain)
    keys = rotation.make_keys(ctx.box, ctx.config, planned)
    domain = owned_domain(ctx, DomainID, _ROTATE_NOT_FOUND)
    if rotation.in_progress(domain):
        raise CommandError(*_ROTATE_IN_PROGRESS)
    if rotation.plan(domain) != planned:
        raise CommandError(11, "The domain's keys changed meanwhile; try again")
    rotation.start(domain, keys, ctx.now, "command")
    ctx.db.flush()
    return {
        "Domain": domain_view(ctx, domain),
        "NewDKIMSelectors": [k.selector for k in keys],
    }
