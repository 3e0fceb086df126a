"""Postal's legacy HTTP API: /api/v1/send/message, /send/raw, /messages/message, /deliveries.

A program written for Postal works by changing its base URL and key. The key
(``X-Server-API-Key``) is a sender key (From at its domain or a subdomain) or a user API key
(From at any of the user's enabled domains). Parameters are the JSON body when the
Content-Type is JSON, else the ``params`` form or query field holding JSON (postal-ruby);
nulls count as not given (postal-php). Every answer is HTTP 200 with Postal's envelope
``{"status", "time", "flags": {}, "data"}`` except a rate limit's (429) and HTTP errors under
these paths (404, 405, 413, 500), which keep the envelope with their own status.

The commands are ``v1.Postal.*`` (commands/sending/postal.py, commands/messages/postal.py);
what the common send checks refuse, Postal never defines: it is answered ``ValidationError``
with Postern's text.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from app.http.envelope import scrub
from app.http.keyed import DisabledAccount, run_with_key
from commands.errors import CommandError
from commands.messages.postal import MessageNotFound
from commands.ratelimit import RateLimited, too_many_requests_text
from commands.sending.handlers import SUSPENDED_ACCOUNT, SUSPENDED_DOMAIN
from commands.sending.postal import ParameterRefused, PostalRefused

bp = Blueprint("postal", __name__, url_prefix="/api/v1")

PREFIXES = ("/api/v1/send/", "/api/v1/messages/")
METHODS = ["GET", "POST", "PUT", "PATCH"]
ACCESS_DENIED = {"message": "Must be authenticated as a server.", "code": "AccessDenied"}
SUSPENDED = {"message": "Your mail server has been suspended", "code": "ServerSuspended"}
INVALID_KEY = "The API token provided in X-Server-API-Key was not valid."


class ParameterError(Exception):
    """Parameters Postal answers with ``parameter-error``."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def envelope(status: str, data: Any, http_status: int = 200) -> Response:
    started = g.get("started", time.perf_counter())
    resp = jsonify(
        {
            "status": status,
            "time": round(time.perf_counter() - started, 3),
            "flags": {},
            "data": data,
        }
    )
    resp.status_code = http_status
    return resp


def error(code: str, text: str, **more: Any) -> Response:
    return envelope("error", {"message": scrub(text), **more, "code": code})


def parameter_error(text: str) -> Response:
    return envelope("parameter-error", {"message": scrub(text)})


def read_params() -> dict[str, Any]:
    """The JSON body (Content-Type application/json), else the ``params`` field of the form
    or query string as JSON, else nothing."""
    if (request.content_type or "").lower().startswith("application/json"):
        raw = request.get_data(cache=True)
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ParameterError("The request body is not valid JSON") from None
    else:
        text = request.form.get("params") if request.form else None
        if text is None:
            text = request.args.get("params")
        if text is None:
            return {}
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            raise ParameterError("The params parameter is not valid JSON") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ParameterError("The parameters must be a JSON object")
    # Postern's own credentials are never read from a Postal body.
    return {str(k): v for k, v in body.items() if str(k).lower() not in ("apikey", "sessionid")}


def answer(command_name: str) -> Response:
    token = request.headers.get("X-Server-API-Key", "").strip()
    if not token:
        return envelope("error", ACCESS_DENIED)
    try:
        params = read_params()
        fields = run_with_key(command_name, params, token)
    except ParameterError as exc:
        return parameter_error(exc.text)
    except DisabledAccount:
        return envelope("error", SUSPENDED)
    except RateLimited as exc:
        resp = envelope(
            "error",
            {"message": too_many_requests_text(exc.decision), "code": "TooManyRequests"},
            429,
        )
        resp.headers["Retry-After"] = str(exc.decision.retry_after)
        return resp
    except ParameterRefused as exc:
        return parameter_error(exc.text)
    except PostalRefused as exc:
        return error(exc.postal_code, exc.text)
    except MessageNotFound as exc:
        return error("MessageNotFound", exc.text, id=exc.given)
    except CommandError as exc:
        if exc.code in (SUSPENDED_ACCOUNT[0], SUSPENDED_DOMAIN[0]):
            return envelope("error", SUSPENDED)  # suspended by an administrator
        if exc.http_status in (401, 403) or exc.code == 99998:
            return error("InvalidServerAPIKey", INVALID_KEY, token=token)
        return error("ValidationError", exc.text)
    if command_name.startswith("v1.Postal.Send"):
        return envelope("success", fields)
    return envelope("success", fields["data"])


@bp.route("/send/message", methods=METHODS)
def send_message() -> Response:
    return answer("v1.Postal.Send")


@bp.route("/send/raw", methods=METHODS)
def send_raw() -> Response:
    return answer("v1.Postal.SendRaw")


@bp.route("/messages/message", methods=METHODS)
def message() -> Response:
    return answer("v1.Postal.Message")


@bp.route("/messages/deliveries", methods=METHODS)
def deliveries() -> Response:
    return answer("v1.Postal.Deliveries")


HTTP_CODES = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestTooLarge"}


def is_postal_path(path: str) -> bool:
    return path.startswith(PREFIXES)


def http_error(status: int, text: str) -> Response:
    """A Postal-shaped answer for an HTTP error under these paths, with its status."""
    code = HTTP_CODES.get(status, "InternalServerError" if status >= 500 else "BadRequest")
    return envelope("error", {"message": scrub(text), "code": code}, status)
