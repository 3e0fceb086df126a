"""Sender-domain API keys: AddAPI, GetAPIs, DeleteAPI, and Bearer authentication with them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar, cast

from marshmallow import fields, validate
from sqlalchemy import Label, bindparam, delete, select, update
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.orm import class_mapper

from commands.auth import SenderCaller
from commands.context import Context, format_date
from commands.errors import CommandError
from commands.registry import Auth, command
from commands.schema import CommandSchema, RowID, param
from commands.tenancy import domain_id_param, owned_domain
from core.crypto import digests_match, new_token, token_digest
from models import Base, Database, Domain, SenderAPIKey, User
from models.direct import Direct

PERMISSIONS = "Send,Events,Webhooks"
TOUCH_SECONDS = 60

M = TypeVar("M", bound=Base)


MISSING_KEY = (1, "Missing SenderAPIKey")
INVALID_KEY = (13, "Invalid SenderAPIKey")
INVALID_ACCOUNT = (2, "Invalid user account")


def unauthorised(code_text: tuple[int, str]) -> CommandError:
    """A sender-key failure: HTTP 403 for a disabled account, 401 otherwise."""
    return CommandError(*code_text, http_status=403 if code_text == INVALID_ACCOUNT else 401)


def _loaded(
    model: type[M], prefix: str
) -> tuple[list[Label[Any]], Callable[[Mapping[str, Any]], M]]:
    """The columns of ``model`` labelled ``prefix + attribute``, and a maker of instances."""
    mapper = class_mapper(model)
    names = [(a.key, prefix + a.key) for a in mapper.column_attrs]
    labelled = [a.columns[0].label(prefix + a.key) for a in mapper.column_attrs]
    new_instance = mapper.class_manager.new_instance

    def make(mapping: Mapping[str, Any]) -> M:
        # A bare instance with its column values (the constructor's bookkeeping costs more
        # than the query on this path); like a detached object, for reading fields only.
        obj = new_instance()
        obj.__dict__.update({key: mapping[label] for key, label in names})
        return obj

    return labelled, make


_USER_COLUMNS, _make_user = _loaded(User, "u_")
_DOMAIN_COLUMNS, _make_domain = _loaded(Domain, "d_")
# The hot path of every /api/v1 request: a Direct statement.
_KEY_QUERY = Direct(
    select(
        SenderAPIKey.id,
        SenderAPIKey.key_digest,
        SenderAPIKey.domain_id,
        SenderAPIKey.user_id,
        SenderAPIKey.last_used_at,
        *_USER_COLUMNS,
        *_DOMAIN_COLUMNS,
    )
    .join(User, User.id == SenderAPIKey.user_id)
    .join(
        Domain,
        (Domain.id == SenderAPIKey.domain_id) & (Domain.user_id == SenderAPIKey.user_id),
    )
    .where(SenderAPIKey.key_digest == bindparam("digest"))
)
_TOUCH = (
    update(SenderAPIKey)
    .where(SenderAPIKey.id == bindparam("key_id"))
    .values(last_used_at=bindparam("now"))
)


_OWNER_QUERY = Direct(
    select(*_USER_COLUMNS, *_DOMAIN_COLUMNS)
    .select_from(Domain)
    .join(User, User.id == Domain.user_id)
    .where(Domain.id == bindparam("domain_id"), User.id == bindparam("user_id"))
)


def load_owner(conn: Connection, user_id: int, domain_id: int) -> tuple[User, Domain] | None:
    """The user and their domain, in one Direct query on ``conn`` (SMTP submissions: once
    per message, in the transaction that accepts it), as new unattached objects to read;
    None when either is gone."""
    row = _OWNER_QUERY.mapping(conn, {"user_id": user_id, "domain_id": domain_id})
    return None if row is None else (_make_user(row), _make_domain(row))


def authenticate_sender(db: Database, key: str | None, now: datetime) -> SenderCaller:
    """The sender key's domain and user; CommandError 13 for a bad key, 2 for a disabled user.

    One Direct query on a connection of its own (no ORM session): it runs on every /api/v1
    request. The user and domain come back as new, unattached objects: read their fields.
    """
    if not isinstance(key, str) or not key.strip():
        raise unauthorised(MISSING_KEY)
    digest = token_digest(key.strip())
    with db.read_connection() as conn:
        row = _KEY_QUERY.mapping(conn, {"digest": digest})
    if row is None or not digests_match(row["key_digest"], digest):
        raise unauthorised(INVALID_KEY)
    if not row["u_enabled"]:
        raise unauthorised(INVALID_ACCOUNT)
    used = row["last_used_at"]
    if used is None or (now - used).total_seconds() > TOUCH_SECONDS:
        with db.engine.begin() as conn:
            conn.execute(_TOUCH, {"key_id": row["id"], "now": now})
    return SenderCaller(
        row["id"], digest, row["domain_id"], row["user_id"], _make_user(row), _make_domain(row)
    )


def key_view(ctx: Context, row: SenderAPIKey) -> dict[str, Any]:
    return {
        "KeyID": str(row.id),
        "DomainID": str(row.domain_id),
        "UserID": str(row.user_id),
        "Key": ctx.box.decrypt(row.key_encrypted),
        "Permissions": row.permissions,
        "Description": row.description,
        "CreationDate": format_date(row.created_at),
        "LastUsedDate": format_date(row.last_used_at),
    }


# Octeth's optional ids of a key, kept as text (their first 64 characters).
OCTETH_IDS = (4, "ListID, SubscriberID, JourneyID and ActionID must be text")


class AddAPISchema(CommandSchema):
    Description = param(
        fields.String(required=True, validate=validate.Length(max=255)),
        missing=(1, "Missing or invalid 'Description' parameter"),
    )
    DomainID = domain_id_param(
        (2, "Missing or invalid 'DomainID' parameter"),
        (2, "Missing or invalid 'DomainID' parameter"),
    )
    ListID = param(fields.String(load_default=None), invalid=OCTETH_IDS)
    SubscriberID = param(fields.String(load_default=None), invalid=OCTETH_IDS)
    JourneyID = param(fields.String(load_default=None), invalid=OCTETH_IDS)
    ActionID = param(fields.String(load_default=None), invalid=OCTETH_IDS)


_ADD_API_NOT_FOUND = (3, "Unable to retrieve sender domain with provided 'DomainID'")


@command("EmailGateway.AddAPI", schema=AddAPISchema, auth=Auth.USER)
def add_api(
    ctx: Context,
    Description: str,
    DomainID: int,
    ListID: str | None,
    SubscriberID: str | None,
    JourneyID: str | None,
    ActionID: str | None,
) -> dict[str, Any]:
    domain = owned_domain(ctx, DomainID, _ADD_API_NOT_FOUND)
    plain = new_token("ps_", nbytes=24)
    row = SenderAPIKey(
        domain_id=domain.id,
        user_id=domain.user_id,
        key_digest=token_digest(plain),
        key_encrypted=ctx.box.encrypt(plain),
        description=Description,
        permissions=PERMISSIONS,
        list_id=_short(ListID),
        subscriber_id=_short(SubscriberID),
        journey_id=_short(JourneyID),
        action_id=_short(ActionID),
        created_at=ctx.now,
    )
    ctx.db.add(row)
    ctx.db.flush()
    return {
        "NewAPIKeyID": str(row.id),
        "APIKey": {
            "Key": plain,
            "Permissions": PERMISSIONS,
            "DomainID": str(domain.id),
            "Description": Description,
        },
    }


def _short(value: str | None) -> str | None:
    return value[:64] if value else None


_GET_APIS_NOT_FOUND = (2, "Unable to retrieve sender domain")


class GetAPIsSchema(CommandSchema):
    DomainID = domain_id_param((1, "Missing required parameter: DomainID"), _GET_APIS_NOT_FOUND)


@command("EmailGateway.GetAPIs", schema=GetAPIsSchema, auth=Auth.USER, readonly=True)
def get_apis(ctx: Context, DomainID: int) -> dict[str, Any]:
    domain = owned_domain(ctx, DomainID, _GET_APIS_NOT_FOUND)
    rows = ctx.db.scalars(
        select(SenderAPIKey).where(SenderAPIKey.domain_id == domain.id).order_by(SenderAPIKey.id)
    ).all()
    return {"APIKeys": [key_view(ctx, r) for r in rows]}


class DeleteAPISchema(CommandSchema):
    ApiKeyId = param(
        RowID(required=True),
        missing=(1, "Missing required parameter: ApiKeyId"),
        invalid=(2, "Invalid API key or API key not found"),
    )


@command("EmailGateway.DeleteAPI", schema=DeleteAPISchema, auth=Auth.USER)
def delete_api(ctx: Context, ApiKeyId: int) -> dict[str, Any]:
    owned = select(Domain.id).where(Domain.user_id == ctx.current_user.id)
    # A DELETE answers a CursorResult (its rowcount); Session.execute is typed for any statement.
    result = cast(
        CursorResult[Any],
        ctx.db.execute(
            delete(SenderAPIKey).where(
                SenderAPIKey.id == ApiKeyId, SenderAPIKey.domain_id.in_(owned)
            )
        ),
    )
    deleted = result.rowcount
    if not deleted:
        raise CommandError(2, "Invalid API key or API key not found")
    return {}
