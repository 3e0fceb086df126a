"""The template commands: EmailGateway.CreateTemplate, GetTemplates, GetTemplate,
UpdateTemplate, DeleteTemplate, and /api/v1/templates (a sender key: its user's templates).

Error codes (docs/api.md): 1 missing TemplateID, 2 template not found (another user's
too), 3 missing or invalid Name, 4 invalid Subject, 5 neither HTMLContent nor PlainContent,
6 a syntax error in a part (with its line).
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields

from commands.context import Context
from commands.registry import Auth, command
from commands.schema import CommandSchema, RowID, param
from commands.templates import store
from commands.templates.store import MISSING_ID, NOT_FOUND, Parts


def _id_param() -> fields.Field[int]:
    return param(RowID(required=True), missing=MISSING_ID, invalid=NOT_FOUND)


def _text() -> fields.Field[Any]:
    return param(
        fields.String(), invalid=(store.SYNTAX, "HTMLContent and PlainContent must be text")
    )


class CreateTemplateSchema(CommandSchema):
    Name = param(fields.String(required=True), missing=store.BAD_NAME)
    Subject = param(
        fields.String(), invalid=(store.BAD_SUBJECT, "Subject must be one line of text")
    )
    HTMLContent = _text()
    PlainContent = _text()


class TemplateIDSchema(CommandSchema):
    TemplateID = _id_param()


class UpdateTemplateSchema(CommandSchema):
    TemplateID = _id_param()
    Name = param(fields.String(), invalid=store.BAD_NAME)
    Subject = param(
        fields.String(), invalid=(store.BAD_SUBJECT, "Subject must be one line of text")
    )
    HTMLContent = _text()
    PlainContent = _text()


def _create(
    ctx: Context,
    Name: str,
    Subject: str | None = None,
    HTMLContent: str | None = None,
    PlainContent: str | None = None,
) -> dict[str, Any]:
    row = store.create(ctx, Name, Parts(Subject or "", HTMLContent, PlainContent))
    return {"TemplateID": row.id, "TemplateHash": row.hash}


def _get_all(ctx: Context) -> dict[str, Any]:
    return {"Templates": [store.summary(row) for row in store.listed(ctx)]}


def _get(ctx: Context, TemplateID: int) -> dict[str, Any]:
    return {"Template": store.view(store.owned(ctx, TemplateID))}


def _update(
    ctx: Context,
    TemplateID: int,
    Name: str | None = None,
    Subject: str | None = None,
    HTMLContent: str | None = None,
    PlainContent: str | None = None,
) -> dict[str, Any]:
    row = store.update(ctx, TemplateID, Name, Subject, HTMLContent, PlainContent)
    return {"Template": store.view(row)}


def _delete(ctx: Context, TemplateID: int) -> dict[str, Any]:
    ctx.db.delete(store.owned(ctx, TemplateID))
    return {}


# Each command as /api.php names it and as /api/v1/templates (a sender key) does: its
# schema, handler and whether it only reads.
_COMMANDS = (
    ("CreateTemplate", "Create", CreateTemplateSchema, _create, False),
    ("GetTemplates", "List", CommandSchema, _get_all, True),
    ("GetTemplate", "Get", TemplateIDSchema, _get, True),
    ("UpdateTemplate", "Update", UpdateTemplateSchema, _update, False),
    ("DeleteTemplate", "Delete", TemplateIDSchema, _delete, False),
)
for octeth_name, v1_name, schema, handler, readonly in _COMMANDS:
    command("EmailGateway." + octeth_name, schema=schema, auth=Auth.USER, readonly=readonly)(
        handler
    )
    command(
        "v1.Templates." + v1_name,
        schema=schema,
        auth=Auth.SENDER,
        transport="v1",
        readonly=readonly,
    )(handler)
