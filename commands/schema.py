"""Command schemas: marshmallow at the edge, each failure mapped to the command's error code."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing, pre_load
from marshmallow.schema import SchemaMeta

from commands.errors import CommandError


def param(
    field: fields.Field[Any],
    *,
    missing: tuple[int, str] | None = None,
    invalid: tuple[int, str] | None = None,
) -> fields.Field[Any]:
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
    def names(self) -> tuple[dict[str, str], set[str]]:
        """Each parameter name by its lower case, and the names of Raw fields (made once per
        schema instance: a command's schema is loaded on every call)."""
        by_lower = {
            (f.data_key or name).lower(): (f.data_key or name) for name, f in self.fields.items()
        }
        raw = {f.data_key or name for name, f in self.fields.items() if type(f) is fields.Raw}
        return by_lower, raw

    @pre_load
    def normalise(self, data: Mapping[str, Any], **_kw: Any) -> dict[str, Any]:
        """The parameters under their declared names, without nulls and blank strings."""
        by_lower, raw = self.names
        out: dict[str, Any] = {}
        for key, value in data.items():
            canonical = by_lower.get(str(key).lower())
            if canonical is None or value is None:  # a JSON null: as if not given
                continue
            if isinstance(value, str) and canonical not in raw:  # Raw fields stay as sent
                value = value.strip()
                if value == "":
                    continue
            if canonical not in raw and has_lone_surrogate(value):
                # Text no encoding can write (a JSON \ud800 escape): the field's invalid
                # code. Raw fields (the send fields) are checked by their own checks.
                raise ValidationError({canonical: ["a lone surrogate"]})
            out[canonical] = value
        return out


def has_lone_surrogate(value: object) -> bool:
    """Whether ``value`` (text, or lists and objects of it) holds a code point from U+D800 to
    U+DFFF, which JSON's ``\\ud800`` escapes can give and no encoding can write."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)
    return False


class RawFieldsMeta(SchemaMeta):
    """Checks, when a RawFieldsSchema class is made, that loading it only normalises names."""

    @classmethod
    def get_declared_fields(
        mcs,  # noqa: N804 - marshmallow's signature
        klass: SchemaMeta,
        cls_fields: list[tuple[str, fields.Field[Any]]],
        inherited_fields: list[tuple[str, fields.Field[Any]]],
        dict_cls: type[dict[str, fields.Field[Any]]] = dict,
    ) -> dict[str, fields.Field[Any]]:
        declared = super().get_declared_fields(klass, cls_fields, inherited_fields, dict_cls)
        problem = _pass_through_problem(klass, declared)
        if problem is not None:
            raise TypeError(f"{klass.__name__} is a RawFieldsSchema: {problem}")
        return declared


def _pass_through_problem(klass: type, declared: Mapping[str, fields.Field[Any]]) -> str | None:
    """Why loading ``klass`` would do more than ``CommandSchema.normalise``, or None."""
    for name, f in declared.items():
        if type(f) is not fields.Raw:
            return f"{name} is a {type(f).__name__}, not a plain fields.Raw"
        if (
            f.required
            or f.validators
            or f.load_default is not missing
            or f.dump_only
            or f.data_key is not None
            or f.attribute is not None
        ):
            return f"{name} must be an optional fields.Raw() with no options"
    for base in klass.__mro__:
        if base is CommandSchema:
            break
        if base.__module__ == __name__ and base.__qualname__ == "RawFieldsSchema":
            continue
        if "Meta" in vars(base):
            return f"{base.__name__} sets Meta options"
        for attr, value in vars(base).items():
            if not attr.startswith("__") and (
                callable(value) or isinstance(value, staticmethod | classmethod | property)
            ):
                return f"{base.__name__}.{attr}: such a schema holds fields only (no hooks)"
    return None


class RawFieldsSchema(CommandSchema, metaclass=RawFieldsMeta):
    """A schema of optional ``fields.Raw`` fields, loaded as given (names normalised only).

    The send fields are such a schema: read on every send, and validated afterwards in
    order by their checks. Marshmallow would hand each value to its field to get it back
    unchanged, at fifteen times the cost of ``normalise``, so ``load_params`` calls that
    alone. Each subclass is checked when it is made (RawFieldsMeta): a field that is not a
    plain optional Raw, a Meta or a method (a hook) is a TypeError.
    """

    @cached_property
    def as_given(self) -> bool:
        """Whether this instance loads as its class does (no only, exclude, partial or
        unknown given when it was made)."""
        return (
            self.only is None
            and not self.exclude
            and not self.partial
            and self.unknown == EXCLUDE
            and self.load_fields.keys() == self.declared_fields.keys()
        )


def load_params(schema: Schema, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate raw parameters; raise the CommandError of the first failing field.

    Fields are checked in the order the schema declares them, so a command's codes come
    out in the order its documentation lists them.
    """
    if isinstance(schema, RawFieldsSchema) and schema.as_given:
        given: dict[str, Any] = schema.normalise(params)  # what schema.load answers (tested)
        return given
    try:
        loaded: dict[str, Any] = schema.load(params)
        return loaded
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


def is_ascii_number(text: str, most_digits: int) -> bool:
    """Whether ``text`` is 1 to ``most_digits`` ASCII digits: ``str.isdigit`` (and ``int``)
    also take other scripts' digits and superscripts, which ``int`` then may refuse."""
    return 0 < len(text) <= most_digits and text.isascii() and text.isdigit()


def parse_row_id(value: object) -> int | None:
    """A row id from a raw value (a whole number, or its digits as text), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and is_ascii_number(value.strip(), 10):
        number = int(value.strip())
    else:
        return None
    return number if 1 <= number <= MAX_ID else None


class RowID(fields.Field[int]):
    """A row id parameter: a whole number (or its digits) within the id columns' range."""

    def _deserialize(
        self, value: object, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int:
        number = parse_row_id(value)
        if number is None:
            raise ValidationError("not a row id")
        return number


class Flag(fields.Boolean):
    """A boolean that also reads the 1/0, yes/no, on/off strings forms and XML clients send."""

    truthy = {"1", "true", "yes", "on", 1}
    falsy = {"0", "false", "no", "off", 0}

    def _deserialize(
        self, value: object, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> bool:
        if isinstance(value, str):
            value = value.strip().lower()
        return super()._deserialize(value, attr, data, **kwargs)
