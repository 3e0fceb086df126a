"""Reading /api.php parameters from the query string and a JSON, form or multipart body."""

from __future__ import annotations

import json
from typing import Any

from flask import Request

from commands.errors import INVALID_JSON, CommandError


def read_params(request: Request) -> dict[str, Any]:
    """All parameters, body over query string.

    A body that starts like JSON is read as JSON whatever its Content-Type says (short of
    multipart); a form body is read as a form, with or without its Content-Type. Form keys
    written ``Name[]``, or given more than once, become lists.
    """
    params: dict[str, Any] = _multidict(request.args)
    mimetype = request.mimetype or ""
    if mimetype == "multipart/form-data":
        params.update(_multidict(request.form))
        return params
    raw = request.get_data(cache=True)
    stripped = raw.lstrip()
    # Legacy clients (curl -d, PHP) often label a JSON body as a form: the body decides.
    if mimetype == "application/json" or mimetype.endswith("+json") or stripped[:1] in (b"{", b"["):
        if not stripped:
            return params
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CommandError(
                INVALID_JSON, f"Invalid JSON in the request body: {exc}", http_status=400
            ) from None
        if not isinstance(body, dict):
            raise CommandError(
                INVALID_JSON, "Invalid JSON: the request body must be an object", http_status=400
            )
        params.update(body)
    elif mimetype == "application/x-www-form-urlencoded" or (mimetype == "" and raw):
        params.update(_multidict(request.form if mimetype else _parse_qs(raw)))
    return params


def _parse_qs(raw: bytes):
    from urllib.parse import parse_qsl

    from werkzeug.datastructures import MultiDict

    return MultiDict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def _multidict(md) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in md:
        values = md.getlist(key)
        if key.endswith("[]"):
            out[key[:-2]] = values
        elif len(values) > 1:
            out[key] = values
        else:
            out[key] = values[0]
    return out
