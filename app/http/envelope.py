"""The /api.php envelope: {"Success", "ErrorCode", "ErrorText", ...fields} as JSON or XML."""

from __future__ import annotations

import json
import re
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
        return Response(to_xml(body).encode("utf-8"), status=status, mimetype="text/xml")
    return Response(
        utf8(json.dumps(body, ensure_ascii=False)), status=status, mimetype="application/json"
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def utf8(text: str) -> bytes:
    """``text`` in UTF-8, each lone surrogate (which UTF-8 cannot write: a JSON ``\\ud800``
    escape sent to us and echoed back in an error text) written as U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return scrub(text).encode("utf-8")


def to_xml(body: Mapping[str, object]) -> str:
    """Octeth's XML rendering: <response> with one element per field.

    Booleans are written as PHP writes them (true as 1, false as empty), list items as
    <item> elements, and None as an empty element. The answer is always well-formed XML
    1.0: a field name that is not a plain XML name (ASCII letters, digits, ``_``, ``-``,
    ``.``, not beginning with a digit, ``-`` or ``.``) is written ``<item name="...">``
    with the name as an attribute; characters XML 1.0 cannot carry (control characters
    other than tab, LF and CR, lone surrogates, U+FFFE and U+FFFF) are written as U+FFFD,
    and CR as ``&#13;`` so that it reads back as CR.
    """
    parts = ['<?xml version="1.0" encoding="utf-8"?>\n<response>']
    for key, value in body.items():
        _xml_value(parts, key, value)
    parts.append("</response>\n")
    return "".join(parts)


def _xml_value(parts: list[str], name: object, value: object) -> None:
    tag, attrs = _element(name)
    if isinstance(value, dict):
        parts.append(f"<{tag}{attrs}>")
        for k, v in value.items():
            _xml_value(parts, k, v)
        parts.append(f"</{tag}>")
    elif isinstance(value, list | tuple):
        parts.append(f"<{tag}{attrs}>")
        for v in value:
            _xml_value(parts, "item", v)
        parts.append(f"</{tag}>")
    elif value is None or value is False:
        parts.append(f"<{tag}{attrs}></{tag}>")
    elif value is True:
        parts.append(f"<{tag}{attrs}>1</{tag}>")
    else:
        parts.append(f"<{tag}{attrs}>{xml_text(str(value))}</{tag}>")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# What XML 1.0 cannot carry at all (its Char production, section 2.2).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _element(name: object) -> tuple[str, str]:
    """The element name and attributes for a field name: the name itself when it is a plain
    XML name, else ``item`` with the name in a ``name`` attribute."""
    text = str(name)
    if _NAME.fullmatch(text):
        return text, ""
    return "item", f' name="{xml_text(text, attribute=True)}"'


def xml_text(text: str, *, attribute: bool = False) -> str:
    """``text`` escaped for XML character data (or a double-quoted attribute)."""
    return escape(_NOT_XML.sub("\ufffd", text), _ATTRIBUTE if attribute else _TEXT)


_TEXT = {"\r": "&#13;"}
_ATTRIBUTE = {"\r": "&#13;", "\n": "&#10;", "\t": "&#9;", '"': "&quot;"}
