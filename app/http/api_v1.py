"""The /api/v1 routes: sender-key (Bearer) authentication, a per-key rate limit, Errors lists."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, Response, jsonify, request

from app.http.context import current_gateway
from app.http.envelope import scrub
from app.http.params import read_params
from commands import find
from commands.errors import CommandError
from commands.ratelimit import RateLimited, api_bucket, too_many_requests_text

bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")


def errors(code: int, message: str, status: int) -> Response:
    # An error text may echo what was sent: a lone surrogate in it is written as U+FFFD.
    resp = jsonify({"Errors": [{"Code": code, "Message": scrub(message)}]})
    resp.status_code = status
    return resp


def sender_key(params: Mapping[str, object]) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for key, value in params.items():
        if str(key).lower() == "senderapikey" and isinstance(value, str) and value.strip():
            return value.strip()
    return None


def run_v1(
    command_name: str,
    account_error: tuple[int, str] | None = None,
    limited_text: str | None = None,
) -> Response:
    """Authenticate the sender key, run the command counting the request against the key's
    rate limit (a send in the transaction that accepts it: ``Gateway.run_limited``).

    ``account_error`` replaces the answer for a disabled account where a route's contract
    gives it another code (the email route: 12); ``limited_text`` the 429 text where a
    route's contract words it otherwise (the events route; ``{seconds}`` is filled in).
    """
    gateway = current_gateway()
    cmd = find(command_name, "v1")
    if cmd is None:  # pragma: no cover - each route names a command registered for v1
        raise LookupError(f"no v1 command {command_name}")
    try:
        params = read_params(request)
        sender = gateway.authenticate_sender(sender_key(params))
        fields, decision = gateway.run_limited(
            cmd,
            params,
            api_bucket(sender.key_digest),
            remote_addr=request.remote_addr,
            sender=sender,
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
    except RateLimited as exc:
        refused = exc.decision
        text = too_many_requests_text(refused)
        if limited_text:
            text = limited_text.format(seconds=refused.retry_after)
        resp = errors(429, text, 429)
        resp.headers["Retry-After"] = str(refused.retry_after)
        return resp
    except CommandError as exc:
        if account_error and exc.http_status == 403:
            return errors(*account_error, 403)
        # Errors raised with an HTTP status keep it (401, 403, 404); the rest are bad requests.
        return errors(exc.code, exc.text, exc.http_status if exc.http_status != 200 else 400)
    resp = jsonify(fields)
    resp.headers["X-RateLimit-Limit"] = str(decision.limit)
    resp.headers["X-RateLimit-Remaining"] = str(decision.remaining)
    return resp


@bp.route("/webhooks", methods=["GET", "POST", "DELETE"])
def webhooks() -> Response:
    return run_v1(
        {"GET": "v1.Webhooks.List", "POST": "v1.Webhooks.Create", "DELETE": "v1.Webhooks.Delete"}[
            request.method
        ]
    )


@bp.route("/email", methods=["POST"])
def email() -> Response:
    return run_v1("v1.Email.Send", account_error=(12, "Invalid or deactivated user account"))


@bp.route("/events", methods=["GET"])
def events() -> Response:
    return run_v1(
        "v1.Events.List",
        limited_text="Too many requests. Please wait for {seconds} seconds before trying again.",
    )


@bp.route("/templates", methods=["GET", "POST", "PUT", "DELETE"])
def templates() -> Response:
    """The key's user's templates: GET lists them (or answers one, given TemplateID), POST
    makes one, PUT changes one, DELETE deletes one."""
    if request.method == "GET":
        one = any(k.lower() == "templateid" for k in request.args)
        return run_v1("v1.Templates.Get" if one else "v1.Templates.List")
    return run_v1(
        {
            "POST": "v1.Templates.Create",
            "PUT": "v1.Templates.Update",
            "DELETE": "v1.Templates.Delete",
        }[request.method]
    )
