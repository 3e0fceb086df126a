"""The /api.php dispatcher: Command=... in, the Octeth envelope out."""

from __future__ import annotations

from flask import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from app.http import envelope
from app.http.context import current_gateway
from app.http.params import read_params
from commands import find
from commands.errors import TOO_MANY_REQUESTS, UNKNOWN_COMMAND, CommandError
from commands.ratelimit import RateLimited, too_many_requests_text

bp = Blueprint("api_php", __name__)


@bp.route("/api.php", methods=["GET", "POST"])
def api_php() -> Response:
    fmt: object = _format_in(request.args)
    cmd = None
    try:
        params = read_params(request)
        lowered = {str(k).lower(): v for k, v in params.items()}
        fmt = lowered.get("responseformat", fmt)
        name = lowered.get("command")
        cmd = find(name) if isinstance(name, str) else None
        if cmd is None:
            text = (
                f"Unknown command: {name}"
                if name and isinstance(name, str)
                else "Missing required parameter: Command"
            )
            raise CommandError(UNKNOWN_COMMAND, text, http_status=400)
        fields = current_gateway().run(
            cmd,
            params,
            remote_addr=request.remote_addr,
            limit_user=True,
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
    except RateLimited as exc:
        # The user's commands past ratelimit.user_requests a user_period.
        decision = exc.decision
        resp = envelope.render(
            envelope.failure(TOO_MANY_REQUESTS, too_many_requests_text(decision)), fmt, 429
        )
        resp.headers["Retry-After"] = str(decision.retry_after)
        return resp
    except CommandError as exc:
        if cmd is None and fmt is None and request.mimetype in _FORMS:
            fmt = _format_in(request.form)  # parameters that could not be read: as asked
        code = [exc.code] if cmd is not None and cmd.error_list else exc.code
        return envelope.render(envelope.failure(code, exc.text), fmt, exc.http_status)
    return envelope.render(envelope.success(fields), fmt)


_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def _format_in(values: MultiDict[str, str]) -> str | None:
    """The ResponseFormat among ``values``, its name in any case."""
    return next(
        (v for k, v in values.items() if isinstance(k, str) and k.lower() == "responseformat"),
        None,
    )
