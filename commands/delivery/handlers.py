"""EmailGateway.ReleaseHeldMessages: held deliveries made due again."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate
from sqlalchemy import select

from commands.context import Context
from commands.delivery.queue import release_held
from commands.errors import CommandError
from commands.registry import Auth, command
from commands.schema import CommandSchema, param
from commands.tenancy import domain_id_param, owned_domain
from models import Message

_NOT_FOUND = (2, "Unable to retrieve sender domain")
_NO_MESSAGE = (3, "Message not found")


class ReleaseHeldMessagesSchema(CommandSchema):
    DomainID = domain_id_param((1, "Missing required parameter: DomainID"), _NOT_FOUND)
    MessageID = param(fields.String(validate=validate.Length(min=1, max=36)), invalid=_NO_MESSAGE)


@command("EmailGateway.ReleaseHeldMessages", schema=ReleaseHeldMessagesSchema, auth=Auth.USER)
def release_held_messages(
    ctx: Context, DomainID: int, MessageID: str | None = None
) -> dict[str, Any]:
    """Make the domain's held deliveries (one message's, when MessageID is given) due now;
    another user's domain or message answers exactly like a missing one."""
    domain = owned_domain(ctx, DomainID, _NOT_FOUND)
    if MessageID is not None:
        found = ctx.db.scalar(
            select(Message.id).where(
                Message.id == MessageID,
                Message.domain_id == domain.id,
                Message.user_id == domain.user_id,
            )
        )
        if found is None:
            raise CommandError(*_NO_MESSAGE)
    return {"ReleasedCount": release_held(ctx.db, domain.id, domain.user_id, MessageID, ctx.now)}
