"""Infobip's email API, the sending half: POST /email/2/send and /email/3/send (multipart
form) and POST /email/4/messages (JSON). The reports and logs (GET /email/1/reports, ...)
are app/http/infobip_reports.py's, on this blueprint.

A program written for Infobip (its Python clients 5.x and 6.x, its Node SDK) works by
changing its base URL and key. ``Authorization: App <key>`` (also ``Bearer`` and ``IBSSO``)
takes a sender key (From at its domain or a subdomain) or a user API key (From at any of
the user's enabled domains); ``Basic`` takes the user's username and password. This module
reads the wire format (app/http/infobip_fields.py) and hands the sends to ``infobip.Send``
/ ``infobip.SendAsUser`` (commands/sending/infobip.py).

Answers: 200 ``{"bulkId", "messages": [{"to", "messageId", "status"}]}`` (/email/4:
``{"messageId", "status", "destination"}``); errors in Infobip's shapes: under /email/2 and
/email/3 ``{"requestError": {"serviceException": {"messageId", "text", "validationErrors"}}}``,
under /email/4 ``{"errorCode", "description", "action", "violations", "resources"}``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from app.http.context import current_gateway
from app.http.envelope import scrub
from app.http.infobip_fields import read_form, read_json
from app.http.keyed import DisabledAccount, run_with_key
from commands import find
from commands.errors import AUTH_FAILED, CommandError
from commands.ratelimit import RateLimited, too_many_requests_text
from commands.sending.infobip import MAX_RECIPIENTS, InfobipRefused

bp = Blueprint("infobip", __name__, url_prefix="/email")

PREFIX = "/email/"
V4_PREFIX = "/email/4/"

# The status a message is answered with, by the route's version.
PENDING = {
    2: {
        "groupId": 1,
        "groupName": "PENDING",
        "id": 7,
        "name": "PENDING_ENROUTE",
        "description": "Message sent to next instance",
    },
    3: {
        "groupId": 1,
        "groupName": "PENDING",
        "id": 26,
        "name": "PENDING_ACCEPTED",
        "description": "Message accepted, pending for delivery.",
    },
}
PENDING[4] = PENDING[3]

MESSAGE_IDS = {
    400: ("BAD_REQUEST", "Bad request"),
    401: ("UNAUTHORIZED", "Invalid login details"),
    403: ("FORBIDDEN", "Forbidden"),
    404: ("NOT_FOUND", "Not found"),
    405: ("BAD_REQUEST", "Method not allowed"),
    409: ("BAD_REQUEST", "Conflict"),
    413: ("BAD_REQUEST", "Request too large"),
    429: ("TOO_MANY_REQUESTS", "Too many requests"),
    500: ("GENERAL_ERROR", "Something went wrong. Please contact support."),
}
V4_ERRORS = {
    400: (
        "E400",
        "Request cannot be processed.",
        "Check the syntax, violations and adjust the request.",
    ),
    401: ("E401", "Invalid login details.", "Check the credentials and try again."),
    403: ("E403", "Forbidden.", "Check the account's sending limit."),
    404: ("E404", "Resource not found.", "Check the path of the request."),
    405: ("E405", "Method not allowed.", "Check the method of the request."),
    409: ("E409", "Conflict.", "Use a new Idempotency-Key for another request."),
    413: ("E413", "Request too large.", "Send a smaller request."),
    429: ("E429", "Too many requests.", "Wait and try again."),
    500: ("E500", "Something went wrong.", "Contact support."),
}


def error(
    status: int, text: str | None = None, problems: dict[str, list[str]] | None = None
) -> Response:
    """An error in the shape of the request's API version."""
    if request.path.startswith(V4_PREFIX):
        code, description, action = V4_ERRORS.get(status, V4_ERRORS[400 if status < 500 else 500])
        body: dict[str, Any] = {
            "errorCode": code,
            "description": scrub(text or description),
            "action": action,
            "violations": [
                {"property": scrub(name), "violation": scrub(v)}
                for name, texts in (problems or {}).items()
                for v in texts
            ],
            "resources": [],
        }
    else:
        message_id, default = MESSAGE_IDS.get(status, MESSAGE_IDS[400 if status < 500 else 500])
        exception: dict[str, Any] = {"messageId": message_id, "text": scrub(text or default)}
        if problems:
            exception["validationErrors"] = {
                scrub(name): [scrub(v) for v in texts] for name, texts in problems.items()
            }
        body = {"requestError": {"serviceException": exception}}
    resp = jsonify(body)
    resp.status_code = status
    return resp


def http_error(status: int, text: str) -> Response:
    """An Infobip-shaped answer for an HTTP error under /email/ (404, 405, 413, 500)."""
    return error(status, None if status >= 500 else text)


def _credentials() -> tuple[str, str, str] | None:
    """("key", key, "") or ("basic", username, password) from the Authorization header."""
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    value = value.strip()
    if not value:
        return None
    kind = scheme.lower()
    if kind in ("app", "bearer", "ibsso"):
        return "key", value, ""
    if kind == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        username, colon, password = decoded.partition(":")
        return ("basic", username, password) if colon and username else None
    return None


def run_infobip(sender_command: str, user_command: str, params: dict[str, Any]) -> Any:
    """Run ``sender_command`` for a sender key, else ``user_command`` for a user key or the
    user's password (Basic); its fields, or the error answer (a Response)."""
    gateway = current_gateway()
    credentials = _credentials()
    if credentials is None:
        return error(401)
    idempotency_key = request.headers.get("Idempotency-Key")
    try:
        if credentials[0] == "basic":
            _, username, password = credentials
            try:
                caller = gateway.authenticate_password(username, password, request.remote_addr)
            except CommandError as exc:
                if exc.http_status == 429:
                    return error(429, exc.text)
                return error(401)
            cmd = find(user_command, "v1")
            assert cmd is not None
            return gateway.run(
                cmd,
                params,
                remote_addr=request.remote_addr,
                limit_user=True,
                idempotency_key=idempotency_key,
                caller=caller,
            )
        return run_with_key(sender_command, params, credentials[1], as_user=user_command)
    except DisabledAccount:
        return error(401)
    except RateLimited as exc:
        resp = error(429, too_many_requests_text(exc.decision))
        resp.headers["Retry-After"] = str(exc.decision.retry_after)
        return resp
    except InfobipRefused as exc:
        return error(exc.http_status, None, exc.errors)
    except CommandError as exc:
        if exc.http_status in (401, 403) or exc.code == AUTH_FAILED:
            return error(401)
        return error(exc.http_status if 400 <= exc.http_status < 500 else 400, exc.text)


def _send(version: int, params: dict[str, Any]) -> Response:
    fields = run_infobip("infobip.Send", "infobip.SendAsUser", params)
    if isinstance(fields, Response):
        return fields
    status = PENDING[version]
    if version == 4:
        messages = [
            {"messageId": m["messageId"], "status": status, "destination": m["to"]}
            for m in fields["Messages"]
        ]
    else:
        messages = [
            {"to": m["to"], "messageId": m["messageId"], "status": status}
            for m in fields["Messages"]
        ]
    return jsonify({"bulkId": fields["BulkID"], "messages": messages})


# Multipart parts a form may have: every recipient its own part, and the other fields and
# files besides (the body as a whole is bounded by http.max_body_bytes).
MAX_FORM_PARTS = MAX_RECIPIENTS + 1000


def _form_limits() -> None:
    """Lift Flask's per-form limits (1,000 parts, 500 KB of text fields) to what Infobip
    allows: 1,000 recipients each its own part, and parts as large as the body."""
    request.max_form_parts = MAX_FORM_PARTS
    request.max_form_memory_size = current_app.config["MAX_CONTENT_LENGTH"]


@bp.route("/2/send", methods=["POST"])
def send_v2() -> Response:
    _form_limits()
    return _send(2, read_form(request, current_gateway().clock()))


@bp.route("/3/send", methods=["POST"])
def send_v3() -> Response:
    _form_limits()
    return _send(3, read_form(request, current_gateway().clock()))


@bp.route("/4/messages", methods=["POST"])
def messages_v4() -> Response:
    return _send(4, read_json(request, current_gateway().clock()))
