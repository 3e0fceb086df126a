"""What a caller owns: lookups that answer another user's row exactly like a missing one."""

from __future__ import annotations

from marshmallow import fields

from commands.context import Context
from commands.errors import CommandError
from commands.schema import RowID, param
from models import Domain


def owned_domain(ctx: Context, domain_id: int | None, not_found: tuple[int, str]) -> Domain:
    """The caller's domain ``domain_id``; anyone else's answers exactly like a missing one."""
    domain = ctx.db.get(Domain, domain_id) if domain_id is not None else None
    if domain is None or domain.user_id != ctx.current_user.id:
        raise CommandError(*not_found)
    return domain


def domain_id_param(missing: tuple[int, str], not_found: tuple[int, str]) -> fields.Field[int]:
    return param(RowID(required=True), missing=missing, invalid=not_found)
