"""FreshMail's transactional API v3: POST /v3/messaging/emails (and with a trailing /).

A program written for FreshMail works by changing its base URL and key. The key
(``Authorization: Bearer``) is a sender key (From at its domain or a subdomain) or a user
API key (From at any of the user's enabled domains). The body is JSON whatever the
Content-Type says. This module reads the wire format, gathers every problem with its shape
into strings naming the field, and hands the batch to ``v1.Batch.Send`` /
``v1.Batch.SendAsUser`` (commands/sending/batch.py), which adds what needs the database.

Answers: 201 ``[{"email", "id"}]``; 400 ``{"errors": [...]}``; 401 ``{"message":
"Unauthorized user. Access denied"}``; 429 ``{"message": ...}``; other errors
``{"message": ...}`` with their status (404, 405, 413; 500 ``Internal server occurred``).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from flask import Blueprint, Response, jsonify, request

from app.http.envelope import scrub
from app.http.keyed import DisabledAccount, run_with_key
from commands.errors import AUTH_FAILED, CommandError
from commands.ratelimit import RateLimited, too_many_requests_text
from mta.addresses import normalise_address

bp = Blueprint("freshmail", __name__, url_prefix="/v3/messaging")

MAX_RECIPIENTS = 100
MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
CONTENT_TYPES = {"text/html": "HTMLContent", "text/plain": "PlainContent"}
UNAUTHORIZED = "Unauthorized user. Access denied"

BLANK = "This value should not be blank."
BAD_EMAIL = "This value is not a valid email address."


def message(text: str, status: int) -> Response:
    resp = jsonify({"message": scrub(text)})
    resp.status_code = status
    return resp


def refused(errors: list[str]) -> Response:
    resp = jsonify({"errors": [scrub(e) for e in errors]})
    resp.status_code = 400
    return resp


def _type_of(value: Any, kind: type, name: str) -> str | None:
    return None if isinstance(value, kind) else f"This value should be of type {name}."


def _person(where: str, value: Any, problems: list[str], *, required: bool) -> dict[str, str]:
    """{email, name} at ``where``: the normalised address, or problems."""
    if value is None:
        if required:
            problems.append(f"{where}: {BLANK}")
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: This value should be of type object.")
        return {}
    email, name = value.get("email"), value.get("name")
    if name is not None and not isinstance(name, str):
        problems.append(f"{where}.name: This value should be of type string.")
        name = None
    if not isinstance(email, str) or not email.strip():
        problems.append(f"{where}.email: {BLANK}")
        return {}
    address = normalise_address(email)
    if address is None:
        problems.append(f"{where}.email: {BAD_EMAIL}")
        return {}
    return {"email": address, "name": (name or "").strip()}


def read_batch(body: Any) -> tuple[dict[str, Any], list[str]]:
    """The batch command's parameters read from a FreshMail body, and every problem."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return {}, ["This value should be of type object."]
    params: dict[str, Any] = {}

    recipients = body.get("recipients")
    read: list[dict[str, Any]] = []
    if recipients is None or recipients == []:
        problems.append(f"recipients: {BLANK}")
    elif not isinstance(recipients, list):
        problems.append("recipients: This value should be of type array.")
    elif len(recipients) > MAX_RECIPIENTS:
        problems.append(
            f"recipients: This collection should contain {MAX_RECIPIENTS} elements or less."
        )
    else:
        for i, entry in enumerate(recipients):
            where = f"recipients[{i}]"
            person = _person(where, entry, problems, required=True)
            if not isinstance(entry, dict):
                continue
            values = entry.get("personalization")
            if values is not None and not isinstance(values, dict):
                problems.append(f"{where}.personalization: This value should be of type object.")
                values = None
            headers = entry.get("headers")
            if person:
                read.append({**person, "index": i, "values": values, "headers": headers})
    params["Recipients"] = read

    params["From"] = _person("from", body.get("from"), problems, required=True) or None

    subject = body.get("subject")
    template_hash = body.get("templateHash")
    contents = body.get("contents")
    if template_hash is not None and contents is not None:
        problems.append("contents: Give either templateHash or contents, not both.")
    elif template_hash is None and contents is None:
        problems.append(f"contents: {BLANK}")
    if template_hash is not None:
        if not isinstance(template_hash, str) or not template_hash.strip():
            problems.append(f"templateHash: {BLANK}")
        else:
            params["TemplateHash"] = template_hash.strip()
    if subject is not None:
        if not isinstance(subject, str):
            problems.append("subject: This value should be of type string.")
        else:
            params["Subject"] = subject
    if (subject is None or subject == "") and template_hash is None:
        problems.append(f"subject: {BLANK}")
    if contents is not None:
        if not isinstance(contents, list) or not contents:
            problems.append(f"contents: {BLANK}")
        else:
            for i, part in enumerate(contents):
                where = f"contents[{i}]"
                if not isinstance(part, dict):
                    problems.append(f"{where}: This value should be of type object.")
                    continue
                kind, text = part.get("type"), part.get("body")
                field = CONTENT_TYPES.get(kind) if isinstance(kind, str) else None
                if field is None:
                    problems.append(
                        f"{where}.type: The value you selected is not a valid choice "
                        "(text/html, text/plain)."
                    )
                elif field in params:
                    problems.append(f"{where}.type: Each content type may be given once.")
                if not isinstance(text, str) or not text.strip():
                    problems.append(f"{where}.body: {BLANK}")
                elif field is not None:
                    params[field] = text

    headers = body.get("headers")
    if headers not in (None, [], {}):
        if not isinstance(headers, dict):
            problems.append("headers: This value should be of type object.")
        else:
            for name, value in headers.items():
                if not str(name).lower().startswith("x-"):
                    problems.append(f"headers.{name}: Header name must start with X-.")
                elif not isinstance(value, str):
                    problems.append(f"headers.{name}: This value should be of type string.")
            params["Headers"] = headers

    attachments = body.get("attachments")
    if attachments not in (None, []):
        params["Attachments"] = _attachments(attachments, problems)

    reply_to = body.get("replyTo")
    if reply_to is not None:
        person = _person("replyTo", reply_to, problems, required=False)
        if person:
            params["ReplyTo"] = [person]
    return params, problems


def _attachments(value: Any, problems: list[str]) -> list[dict[str, str]]:
    if not isinstance(value, list):
        problems.append("attachments: This value should be of type array.")
        return []
    if len(value) > MAX_ATTACHMENTS:
        problems.append(
            f"attachments: This collection should contain {MAX_ATTACHMENTS} elements or less."
        )
    out: list[dict[str, str]] = []
    total = 0
    for i, item in enumerate(value):
        where = f"attachments[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: This value should be of type object.")
            continue
        name, content = item.get("name"), item.get("content")
        ok = True
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}.name: {BLANK}")
            ok = False
        if not isinstance(content, str) or not content:
            problems.append(f"{where}.content: {BLANK}")
            continue
        try:
            total += len(base64.b64decode(content, validate=True))
        except (binascii.Error, ValueError):
            problems.append(f"{where}.content: This value is not valid base64.")
            continue
        if ok:
            out.append({"filename": str(name), "content": content})
    if total > MAX_ATTACHMENT_BYTES:
        problems.append("attachments: The attachments may be at most 10 MB in total.")
    return out


def _bearer() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _body() -> tuple[Any, list[str]]:
    """The body read as JSON whatever the Content-Type says; a problem when it is not."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return None, ["This value should be of type object."]
    try:
        return json.loads(raw), []
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, ["The request body is not valid JSON."]


@bp.route("/emails", methods=["POST"])
@bp.route("/emails/", methods=["POST"])
def emails() -> Response:
    token = _bearer()
    if token is None:
        return message(UNAUTHORIZED, 401)
    body, problems = _body()
    params, more = read_batch(body) if not problems else ({}, [])
    params["Problems"] = problems + more
    try:
        fields = run_with_key("v1.Batch.Send", params, token)
    except DisabledAccount:
        return message(UNAUTHORIZED, 401)
    except RateLimited as exc:
        resp = message(too_many_requests_text(exc.decision), 429)
        resp.headers["Retry-After"] = str(exc.decision.retry_after)
        return resp
    except CommandError as exc:
        errors = getattr(exc, "errors", None)
        if isinstance(errors, list):
            return refused(errors)
        if exc.http_status in (401, 403) or exc.code == AUTH_FAILED:
            return message(UNAUTHORIZED, 401)
        return refused([exc.text])
    resp = jsonify(fields["Messages"])
    resp.status_code = 201
    return resp


def http_error(status: int, text: str) -> Response:
    """A FreshMail-shaped answer for an HTTP error under /v3/ (404, 405, 413, 500)."""
    if status >= 500:
        return message("Internal server occurred", status)
    return message(text, status)
