"""Command schemas: marshmallow at the edge, each failure mapped to the command's error code."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing, pre_load

from commands.errors import CommandError


def param(
    field: fields.Field,
    *,
    missing: tuple[int, str] | None = None,
    invalid: tuple[int, str] | None = None,
) -> fields.Field:
    """Attach the command's error codes to a field.

    ``missing`` is the (code, text) answered when the parameter is absent or blank,
    ``invalid`` when it is present but does not validate (defaults to ``missing``).
    """
    field.metadata = {**field.metadata, "missing": missing, "invalid": invalid or missing}
    return field


class CommandSchema(Schema):
    """Base schema: names match case-insensitively; nulls and blank strings count as absent.

    Strings are stripped, except in ``fields.Raw`` fields (message bodies), which stay as sent.
    """

    class Meta:
        unknown = EXCLUDE

    @cached_property
    def _names(self) -> tuple[dict[str, str], set[str]]:
        """Each parameter name by its lower case, and the names of Raw fields (made once per
        schema instance: a command's schema is loaded on every call)."""
        by_lower = {
            (f.data_key or name).lower(): (f.data_key or name) for name, f in self.fields.items()
        }
        raw = {f.data_key or name for name, f in self.fields.items() if type(f) is fields.Raw}
        return by_lower, raw

    @cached_property
    def as_given(self) -> bool:
        """Whether loading this schema only normalises names (``_normalise``): every field is
        an optional ``fields.Raw`` under its own name, with no validator or default, and the
        schema has no hook but ``_normalise``. Such a schema (the send fields, read on every
        send) is loaded without marshmallow, which would hand each value to its field to
        give back unchanged."""
        hooks = [hook[0] for names in self._hooks.values() for hook in names]
        return hooks == ["_normalise"] and all(
            type(f) is fields.Raw
            and not f.required
            and not f.validators
            and f.load_default is missing
            and not f.dump_only
            and f.data_key is None
            and f.attribute is None
            for f in self.fields.values()
        )

    @pre_load
    def _normalise(self, data: Mapping[str, Any], **_kw) -> dict[str, Any]:
        by_lower, raw = self._names
        out: dict[str, Any] = {}
        for key, value in data.items():
            canonical = by_lower.get(str(key).lower())
            if canonical is None or value is None:  # a JSON null: as if not given
                continue
            if isinstance(value, str) and canonical not in raw:  # Raw fields stay as sent
                value = value.strip()
                if value == "":
                    continue
            out[canonical] = value
        return out


def load_params(schema: Schema, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate raw parameters; raise the CommandError of the first failing field.

    Fields are checked in the order the schema declares them, so a command's codes come
    out in the order its documentation lists them.
    """
    if isinstance(schema, CommandSchema) and schema.as_given:
        return schema._normalise(params)  # what schema.load answers, at a fifteenth of the cost
    try:
        return schema.load(params)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {}
        present = {
            str(k).lower()
            for k, v in params.items()
            if not (isinstance(v, str) and v.strip() == "") and v is not None
        }
        for name, field in schema.fields.items():
            key = field.data_key or name
            if key not in messages:
                continue
            kind = "invalid" if key.lower() in present else "missing"
            code_text = field.metadata.get(kind) or field.metadata.get("missing")
            if code_text is None:
                raise AssertionError(
                    f"field {key} of {type(schema).__name__} has no error code"
                ) from exc
            code, text = code_text
            raise CommandError(code, text) from None
        raise  # pragma: no cover - every failure belongs to a field


MAX_ID = 2**31 - 1


def parse_row_id(value) -> int | None:
    """A row id from a raw value (a whole number, or its digits as text), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        return None
    return number if 1 <= number <= MAX_ID else None


class RowID(fields.Field):
    """A row id parameter: a whole number (or its digits) within the id columns' range."""

    def _deserialize(self, value, attr, data, **kwargs) -> int:
        number = parse_row_id(value)
        if number is None:
            raise ValidationError("not a row id")
        return number


class Flag(fields.Boolean):
    """A boolean that also reads the 1/0, yes/no, on/off strings forms and XML clients send."""

    truthy = {"1", "true", "yes", "on", 1}
    falsy = {"0", "false", "no", "off", 0}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = value.strip().lower()
        return super()._deserialize(value, attr, data, **kwargs)
