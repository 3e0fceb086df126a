"""The /api.php dispatcher: Command=... in, the Octeth envelope out."""

from __future__ import annotations

from flask import Blueprint, Response, request

from app.http import envelope
from app.http.context import current_gateway
from app.http.params import read_params
from commands import find
from commands.errors import TOO_MANY_REQUESTS, UNKNOWN_COMMAND, CommandError
from commands.ratelimit import RateLimited, too_many_requests_text

bp = Blueprint("api_php", __name__)


@bp.route("/api.php", methods=["GET", "POST"])
def api_php() -> Response:
    fmt: object = request.args.get("ResponseFormat") or request.args.get("responseformat")
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
        code = [exc.code] if cmd is not None and cmd.error_list else exc.code
        return envelope.render(envelope.failure(code, exc.text), fmt, exc.http_status)
    return envelope.render(envelope.success(fields), fmt)
