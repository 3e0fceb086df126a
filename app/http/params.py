"""Reading /api.php parameters from the query string and a JSON, form or multipart body."""

from __future__ import annotations

import json
import re

from flask import Request
from werkzeug.datastructures import MultiDict

from commands.errors import BAD_PARAMETERS, INVALID_JSON, CommandError

# How deep a parameter's value may nest (lists and objects in JSON, [key] parts in a form
# key): the send fields need four levels; deeper values are refused before anything reads
# them, so no later step recurses without bound.
MAX_DEPTH = 32


def read_params(request: Request) -> dict[str, object]:
    """All parameters, body over query string.

    A body that starts like JSON is read as JSON whatever its Content-Type says (short of
    multipart); a form body is read as a form, with or without its Content-Type. Form keys
    written ``Name[]``, or given more than once, become lists.
    """
    params = _multidict(request.args)
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
        except RecursionError:
            body = None  # deeper than the parser goes: refused below
        if body is None or _too_deep(body):
            raise CommandError(
                INVALID_JSON,
                f"Invalid JSON: the request body is nested deeper than {MAX_DEPTH} levels",
                http_status=400,
            )
        if not isinstance(body, dict):
            raise CommandError(
                INVALID_JSON, "Invalid JSON: the request body must be an object", http_status=400
            )
        params.update(body)
    elif mimetype == "application/x-www-form-urlencoded" or (mimetype == "" and raw):
        params.update(_multidict(request.form if mimetype else _parse_qs(raw)))
    return params


def _too_deep(value: object) -> bool:
    """Whether ``value`` nests lists and objects deeper than MAX_DEPTH (looked at without
    recursion)."""
    level: list[object] = [value]
    for _ in range(MAX_DEPTH + 1):
        children: list[object] = []
        for node in level:
            if isinstance(node, dict):
                children.extend(node.values())
            elif isinstance(node, list):
                children.extend(node)
        if not children:
            return False
        level = children
    return True


def _parse_qs(raw: bytes) -> MultiDict[str, str]:
    from urllib.parse import parse_qsl

    return MultiDict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


_PATH = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")


def _multidict(md: MultiDict[str, str]) -> dict[str, object]:
    """Form fields as a dict; PHP-style keys (``To[0][email]``, ``Tags[]``) become nested."""
    out: dict[str, object] = {}
    for key in md:
        if not isinstance(key, str):
            continue  # a multipart part without a name (werkzeug reads it as None)
        values = md.getlist(key)
        match = _PATH.match(key)
        if match is None:
            out[key] = values if len(values) > 1 else values[0]
            continue
        path = [match.group(1)] + re.findall(r"\[([^\[\]]*)\]", match.group(2))
        if len(path) > MAX_DEPTH:
            raise CommandError(
                BAD_PARAMETERS,
                f"Invalid parameter name: {key[:40]}... has more than {MAX_DEPTH} [key] parts",
                http_status=400,
            )
        for value in values:
            _put(out, path, value)
    return {k: _listify(v) for k, v in out.items()}


def _put(node: dict[str, object], path: list[str], value: str) -> None:
    for part in path[:-1]:
        if part == "":
            part = str(len(node))
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    last = path[-1]
    node[str(len(node)) if last == "" else last] = value


def _listify(value: object) -> object:
    """Dicts whose keys are 0..n-1 become lists, at every depth."""
    if not isinstance(value, dict):
        return value
    value = {k: _listify(v) for k, v in value.items()}
    # ASCII digits only: str.isdigit also takes "²", which int() refuses.
    if value and all(len(k) <= 9 and k.isascii() and k.isdigit() for k in value):
        keys = sorted(value, key=int)
        if [int(k) for k in keys] == list(range(len(keys))):
            return [value[k] for k in keys]
    return value
