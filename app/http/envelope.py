"""The /api.php envelope: {"Success", "ErrorCode", "ErrorText", ...fields} as JSON or XML."""

from __future__ import annotations

import json
from collections.abc import Mapping
from xml.sax.saxutils import escape

from flask import Response


def success(fields: Mapping[str, object]) -> dict[str, object]:
    return {"Success": True, "ErrorCode": 0, **fields}


def failure(code: int | list[int], text: str, **extra: object) -> dict[str, object]:
    # ErrorMessage repeats ErrorText: seed 003 shows both names in its examples.
    return {"Success": False, "ErrorCode": code, "ErrorText": text, "ErrorMessage": text, **extra}


def render(body: Mapping[str, object], fmt: object, status: int = 200) -> Response:
    """``body`` as XML when ``fmt`` (the request's ResponseFormat, if any) says so, else JSON."""
    if isinstance(fmt, str) and fmt.strip().upper() == "XML":
        return Response(to_xml(body), status=status, mimetype="text/xml")
    return Response(
        json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json"
    )


def to_xml(body: Mapping[str, object]) -> str:
    """Octeth's XML rendering: <response> with one element per field.

    Booleans are written as PHP writes them (true as 1, false as empty), list items as
    <item> elements, and None as an empty element.
    """
    parts = ['<?xml version="1.0" encoding="utf-8"?>\n<response>']
    for key, value in body.items():
        _xml_value(parts, key, value)
    parts.append("</response>\n")
    return "".join(parts)


def _xml_value(parts: list[str], tag: str, value: object) -> None:
    tag = _tag(tag)
    if isinstance(value, dict):
        parts.append(f"<{tag}>")
        for k, v in value.items():
            _xml_value(parts, k, v)
        parts.append(f"</{tag}>")
    elif isinstance(value, list | tuple):
        parts.append(f"<{tag}>")
        for v in value:
            _xml_value(parts, "item", v)
        parts.append(f"</{tag}>")
    elif value is None or value is False:
        parts.append(f"<{tag}></{tag}>")
    elif value is True:
        parts.append(f"<{tag}>1</{tag}>")
    else:
        parts.append(f"<{tag}>{escape(str(value))}</{tag}>")


def _tag(name: str) -> str:
    """An XML element name from a field name (fields are ASCII identifiers already)."""
    cleaned = "".join(c if c.isalnum() or c in "_-." else "_" for c in str(name))
    return cleaned if cleaned and (cleaned[0].isalpha() or cleaned[0] == "_") else f"_{cleaned}"
