"""Webhooks: AddWebhook, GetWebhooks, DeleteWebhook, RegenerateSigningKey, and /api/v1/webhooks."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from marshmallow import fields, validate
from sqlalchemy import func, select

from commands.context import Context, format_date
from commands.errors import CommandError
from commands.registry import Auth, command
from commands.schema import MAX_ID, CommandSchema, RowID, param, parse_row_id
from commands.tenancy import domain_id_param, owned_domain
from commands.webhooks.postal import FORMATS, NOT_IN_POSTAL, POSTAL, POSTAL_ONLY_EVENTS, POSTERN
from core.crypto import new_signing_key
from core.settings import Config
from models import Domain, Webhook, WebhookAttempt, WebhookDelivery
from models.webhooks import FAILED, PENDING, SUCCEEDED
from mta.ipcheck import is_public

# Both vocabularies: Octeth's first names and the past-tense ones.
EVENTS = {
    "delivery": "delivered",
    "bounce": "bounced",
    "block": "blocked",
    "open": "opened",
    "click": "clicked",
    "unsubscribe": "unsubscribed",
    "complaint": "complained",
    # Postern's own (no other name): feedback reports of types not-spam and auth-failure.
    "not_spam": "not_spam",
    "auth_failure": "auth_failure",
}
ALL_EVENTS = set(EVENTS) | set(EVENTS.values())
# Postal-format webhooks also take the events only Postal has names for (MessageDelayed,
# MessageDeliveryFailed, MessageHeld) and leave out those Postal has none for.
POSTAL_EVENT_NAMES = (ALL_EVENTS | set(POSTAL_ONLY_EVENTS)) - {
    name for name in ALL_EVENTS if EVENTS.get(name, name) in NOT_IN_POSTAL
}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_events(raw: Any, fmt: str = POSTERN) -> list[str] | None:
    """Event names from a string (comma-separated) or a list; None when any is unknown (to
    a webhook of format ``fmt``)."""
    items = raw if isinstance(raw, list) else str(raw).split(",")
    known = POSTAL_EVENT_NAMES if fmt == POSTAL else ALL_EVENTS
    names = []
    for item in items:
        name = str(item).strip().lower()
        if name not in known:
            return None
        if name not in names:
            names.append(name)
    return names or None


def url_problem(url: str, config: Config) -> str | None:
    """Why ``url`` cannot be a webhook URL, or None when it can."""
    if len(url) > 2048:
        return "the URL is longer than 2048 characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "the URL cannot be parsed"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the URL must start with http:// or https:// and name a host"
    problem = host_problem(parts.hostname, config)
    try:
        ip = ipaddress.ip_address(parts.hostname)
    except ValueError:  # a name: its addresses are checked before each POST
        return problem
    return problem or address_problem(ip, config)


def host_problem(host: str, config: Config) -> str | None:
    """Why a webhook may not be sent to the host named ``host``, or None."""
    if config.webhooks.allow_private:
        return None
    host = host.lower().rstrip(".")
    own = {config.smtp.hostname.lower(), (urlsplit(config.http.public_url).hostname or "").lower()}
    if host == "localhost" or host.endswith(".localhost") or host in own:
        return "the URL points at this gateway or at localhost"
    return None


def address_problem(ip: IPAddress, config: Config) -> str | None:
    """Why a webhook may not be sent to the address ``ip``, or None."""
    if config.webhooks.allow_private:
        return None
    if not is_public(ip):
        return "the URL points at a loopback, private or reserved address"
    return None


def event_name(subscribed: str, event_type: str, fmt: str = POSTERN) -> str | None:
    """The name a webhook subscribed to ``event_type`` by, in its own vocabulary, or None.

    ``subscribed`` is the webhook's comma list as registered; ``event_type`` an event's
    type as written in the event log (``delivered``, ``bounced``, ...). A Postal-format
    webhook subscribed to ``failed`` (MessageDeliveryFailed) hears of ``blocked`` too.
    """
    names = subscribed.split(",")
    for name in names:
        if EVENTS.get(name, name) == event_type:
            return name
    if fmt == POSTAL and event_type == "blocked" and "failed" in names:
        return "failed"
    return None


def invalid_events_text(raw: Any, fmt: str) -> str:
    """Why ``raw`` is no event list for a webhook of format ``fmt``."""
    if fmt == POSTAL and parse_events(raw) is not None:
        return (
            "Invalid event type specified: Postal has no webhook event for "
            "unsubscribe, complaint, not_spam or auth_failure"
        )
    if fmt != POSTAL and parse_events(raw, POSTAL) is not None:
        return "Invalid event type specified: deferred, failed and held need Format=postal"
    return "Invalid event type specified"


def parse_format(raw: Any) -> str:
    """The webhook format named by ``raw`` (None: Postern's own); error 8 when unknown."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return POSTERN
    fmt = str(raw).strip().lower()
    if fmt not in FORMATS:
        raise CommandError(8, "Invalid Format: it must be postern or postal")
    return fmt


LIMIT_REACHED = 7


def add_webhook(
    ctx: Context, domain: Domain, events: list[str], url: str, fmt: str = POSTERN
) -> Webhook:
    """A new webhook for ``domain``; error 7 once it has ``webhooks.max_per_domain``."""
    most = ctx.config.webhooks.max_per_domain
    count = ctx.db.scalar(
        select(func.count()).select_from(Webhook).where(Webhook.domain_id == domain.id)
    )
    if (count or 0) >= most:
        raise CommandError(
            LIMIT_REACHED,
            f"Webhook limit reached: a domain may have at most {most} webhooks",
        )
    row = Webhook(
        domain_id=domain.id, url=url, events=",".join(events), format=fmt, created_at=ctx.now
    )
    ctx.db.add(row)
    ctx.db.flush()
    return row


def webhook_status(w: Webhook) -> str:
    if w.active:
        return "Active"
    return "Disabled" if w.disabled_at is not None else "Inactive"


def webhook_view(w: Webhook) -> dict[str, Any]:
    """A webhook as GetWebhooks and /api/v1/webhooks list it."""
    return {
        "WebhookID": str(w.id),
        "URL": w.url,
        "Events": w.events.split(","),
        "Format": w.format,
        "Status": webhook_status(w),
        "FailingSince": format_date(w.failing_since) if w.failing_since else None,
        "DisabledDate": format_date(w.disabled_at) if w.disabled_at else None,
        "DisabledReason": w.disabled_reason,
    }


def domain_webhooks(ctx: Context, domain: Domain) -> list[Webhook]:
    return list(
        ctx.db.scalars(select(Webhook).where(Webhook.domain_id == domain.id).order_by(Webhook.id))
    )


_ADD_WEBHOOK_NOT_FOUND = (4, "Domain not found or access denied")


class AddWebhookSchema(CommandSchema):
    DomainID = domain_id_param((1, "Missing required parameter DomainID"), _ADD_WEBHOOK_NOT_FOUND)
    Event = param(fields.Raw(required=True), missing=(2, "Missing required parameter Event"))
    WebhookURL = param(
        fields.String(required=True), missing=(5, "Missing required parameter WebhookURL")
    )
    Format = param(fields.Raw(allow_none=True))


@command("EmailGateway.AddWebhook", schema=AddWebhookSchema, auth=Auth.USER, error_list=True)
def add_webhook_command(
    ctx: Context, DomainID: int, Event: Any, WebhookURL: str, Format: Any = None
) -> dict[str, Any]:
    fmt = parse_format(Format)
    events = parse_events(Event, fmt)
    if events is None:
        raise CommandError(3, invalid_events_text(Event, fmt))
    domain = owned_domain(ctx, DomainID, _ADD_WEBHOOK_NOT_FOUND)
    problem = url_problem(WebhookURL, ctx.config)
    if problem:
        raise CommandError(6, f"Invalid WebhookURL: {problem}")
    return {"NewWebhookID": str(add_webhook(ctx, domain, events, WebhookURL, fmt).id)}


_GET_WEBHOOKS_NOT_FOUND = (2, "Invalid domain or domain does not belong to the user")


class GetWebhooksSchema(CommandSchema):
    DomainID = domain_id_param(
        (1, "Missing required parameter DomainID"),
        _GET_WEBHOOKS_NOT_FOUND,
    )


@command("EmailGateway.GetWebhooks", schema=GetWebhooksSchema, auth=Auth.USER, readonly=True)
def get_webhooks(ctx: Context, DomainID: int) -> dict[str, Any]:
    domain = owned_domain(ctx, DomainID, _GET_WEBHOOKS_NOT_FOUND)
    return {
        "SigningKey": ctx.box.decrypt(domain.signing_key_encrypted),
        "Webhooks": [webhook_view(w) for w in domain_webhooks(ctx, domain)],
    }


class DeleteWebhookSchema(CommandSchema):
    WebhookID = param(
        RowID(required=True),
        missing=(1, "Missing required parameter: WebhookID or DomainID"),
        invalid=(4, "Webhook not found or user does not have permission to access it"),
    )
    DomainID = param(
        RowID(required=True),
        missing=(1, "Missing required parameter: WebhookID or DomainID"),
        invalid=(2, "Invalid DomainID or DomainID not found"),
    )


_DELETE_WEBHOOK_NOT_FOUND = (3, "Domain validation failed")


@command("EmailGateway.DeleteWebhook", schema=DeleteWebhookSchema, auth=Auth.USER)
def delete_webhook(ctx: Context, WebhookID: int, DomainID: int) -> dict[str, Any]:
    domain = owned_domain(ctx, DomainID, _DELETE_WEBHOOK_NOT_FOUND)
    row = ctx.db.get(Webhook, WebhookID)
    if row is None or row.domain_id != domain.id:
        raise CommandError(4, "Webhook not found or user does not have permission to access it")
    ctx.db.delete(row)
    return {}


_ENABLE_WEBHOOK_NOT_FOUND = (2, "Webhook not found or user does not have permission to access it")


class EnableWebhookSchema(CommandSchema):
    WebhookID = param(
        RowID(required=True),
        missing=(1, "Missing required parameter WebhookID"),
        invalid=_ENABLE_WEBHOOK_NOT_FOUND,
    )
    DomainID = param(RowID(), invalid=_ENABLE_WEBHOOK_NOT_FOUND)


@command("EmailGateway.EnableWebhook", schema=EnableWebhookSchema, auth=Auth.USER)
def enable_webhook(ctx: Context, WebhookID: int, DomainID: int | None = None) -> dict[str, Any]:
    """Turn a webhook on again (one disabled after days of failures): it gets deliveries
    for the events that happen from now on. Enabling an active webhook changes nothing."""
    row = ctx.db.get(Webhook, WebhookID)
    domain = ctx.db.get(Domain, row.domain_id) if row is not None else None
    if (
        row is None
        or domain is None
        or domain.user_id != ctx.current_user.id
        or (DomainID is not None and domain.id != DomainID)
    ):
        raise CommandError(*_ENABLE_WEBHOOK_NOT_FOUND)
    row.active = True
    row.failing_since = row.disabled_at = row.disabled_reason = None
    return {"Webhook": webhook_view(row)}


class RegenerateSigningKeySchema(CommandSchema):
    DomainID = domain_id_param(
        (1, "Missing required parameter DomainID"),
        _GET_WEBHOOKS_NOT_FOUND,
    )


@command("EmailGateway.RegenerateSigningKey", schema=RegenerateSigningKeySchema, auth=Auth.USER)
def regenerate_signing_key(ctx: Context, DomainID: int) -> dict[str, Any]:
    domain = owned_domain(ctx, DomainID, _GET_WEBHOOKS_NOT_FOUND)
    key = new_signing_key()
    domain.signing_key_encrypted = ctx.box.encrypt(key)
    return {"SigningKey": key}


DELIVERY_STATUSES = (PENDING, SUCCEEDED, FAILED)
MAX_DELIVERIES_PAGE = 100


class GetWebhookDeliveriesSchema(CommandSchema):
    DomainID = domain_id_param(
        (1, "Missing required parameter DomainID"),
        _GET_WEBHOOKS_NOT_FOUND,
    )
    WebhookID = param(RowID(), invalid=(3, "Webhook not found in this domain"))
    Status = param(
        fields.String(validate=validate.OneOf(DELIVERY_STATUSES)),
        invalid=(4, "Status must be one of " + ", ".join(DELIVERY_STATUSES)),
    )
    StartFrom = param(
        fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_ID)),
        invalid=(5, "StartFrom must be a whole number, 0 or more"),
    )
    RetrieveCount = param(
        fields.Integer(load_default=100, validate=validate.Range(1, MAX_DELIVERIES_PAGE)),
        invalid=(6, f"RetrieveCount must be from 1 to {MAX_DELIVERIES_PAGE}"),
    )


@command(
    "EmailGateway.GetWebhookDeliveries",
    schema=GetWebhookDeliveriesSchema,
    auth=Auth.USER,
    readonly=True,
)
def get_webhook_deliveries(
    ctx: Context,
    DomainID: int,
    StartFrom: int,
    RetrieveCount: int,
    WebhookID: int | None = None,
    Status: str | None = None,
) -> dict[str, Any]:
    """The domain's webhook deliveries, newest first, each with its attempts."""
    domain = owned_domain(ctx, DomainID, _GET_WEBHOOKS_NOT_FOUND)
    where = [WebhookDelivery.domain_id == domain.id, WebhookDelivery.user_id == domain.user_id]
    if WebhookID is not None:
        webhook = ctx.db.get(Webhook, WebhookID)
        if webhook is None or webhook.domain_id != domain.id:
            raise CommandError(3, "Webhook not found in this domain")
        where.append(WebhookDelivery.webhook_id == WebhookID)
    if Status is not None:
        where.append(WebhookDelivery.status == Status)
    total = ctx.db.scalar(select(func.count()).select_from(WebhookDelivery).where(*where))
    rows = list(
        ctx.db.scalars(
            select(WebhookDelivery)
            .where(*where)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
            .offset(StartFrom)
            .limit(RetrieveCount)
        )
    )
    attempts: dict[int, list[WebhookAttempt]] = {row.id: [] for row in rows}
    if rows:
        for attempt in ctx.db.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(attempts))
            .order_by(WebhookAttempt.id)
        ):
            attempts[attempt.delivery_id].append(attempt)
    return {
        "TotalRecords": total,
        "Deliveries": [delivery_view(row, attempts[row.id]) for row in rows],
    }


def delivery_view(row: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    return {
        "DeliveryID": str(row.id),
        # Empty for a push to a message's own URL (Infobip's notifyUrl and trackingUrl).
        "WebhookID": str(row.webhook_id) if row.webhook_id is not None else "",
        "URL": row.url,
        "EventID": row.event_uid,
        "Event": row.event_name,
        "Status": row.status,
        "AttemptCount": row.attempts,
        "NextAttemptDate": format_date(row.due_at) if row.status == PENDING else None,
        "LastStatusCode": row.last_status_code,
        "LastError": row.last_error,
        "CreatedDate": format_date(row.created_at),
        "Attempts": [
            {
                "Time": format_date(a.attempted_at),
                "StatusCode": a.status_code,
                "DurationMs": a.duration_ms,
                "Error": a.error,
            }
            for a in attempts
        ],
    }


# /api/v1/webhooks: the same operations for the sender key's own domain.


class V1CreateSchema(CommandSchema):
    Event = param(fields.Raw(required=True), missing=(2, "Event is missing"))
    WebhookURL = param(fields.String(required=True), missing=(5, "WebhookURL is missing"))
    Format = param(fields.Raw(allow_none=True))


@command("v1.Webhooks.Create", schema=V1CreateSchema, auth=Auth.SENDER, transport="v1")
def v1_create(ctx: Context, Event: Any, WebhookURL: str, Format: Any = None) -> dict[str, Any]:
    fmt = parse_format(Format)
    events = parse_events(Event, fmt)
    if events is None:
        text = invalid_events_text(Event, fmt)
        raise CommandError(3, text.replace("Invalid event type specified", "Invalid Event value"))
    problem = url_problem(WebhookURL, ctx.config)
    if problem:
        raise CommandError(6, f"Invalid WebhookURL: {problem}")
    return {"NewWebhookID": str(add_webhook(ctx, ctx.sender_domain, events, WebhookURL, fmt).id)}


@command("v1.Webhooks.List", schema=CommandSchema, auth=Auth.SENDER, transport="v1", readonly=True)
def v1_list(ctx: Context) -> dict[str, Any]:
    return {
        "Webhooks": [
            {"Event": w.events, **webhook_view(w)} for w in domain_webhooks(ctx, ctx.sender_domain)
        ]
    }


class V1DeleteSchema(CommandSchema):
    WebhookID = param(fields.Raw(required=True), missing=(1, "WebhookID is missing"))


@command("v1.Webhooks.Delete", schema=V1DeleteSchema, auth=Auth.SENDER, transport="v1")
def v1_delete(ctx: Context, WebhookID: Any) -> dict[str, Any]:
    webhook_id = parse_row_id(WebhookID)
    row = ctx.db.get(Webhook, webhook_id) if webhook_id else None
    if row is None or row.domain_id != ctx.current_sender.domain_id:
        raise CommandError(4, "Invalid WebhookID", http_status=404)
    ctx.db.delete(row)
    return {"Message": "Webhook successfully deleted."}
