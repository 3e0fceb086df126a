"""The web console at /console/: static ES modules and CSS that use only /api.php commands."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, redirect, send_from_directory
from flask.typing import ResponseReturnValue

STATIC = Path(__file__).parent / "static"

#: No inline script or style, nothing from elsewhere, no framing, no <base>.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'"
)

bp = Blueprint("console", __name__)


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.route("/console", methods=["GET"])
def console_root() -> ResponseReturnValue:
    return redirect("/console/", code=308)


@bp.route("/console/", methods=["GET"])
def console_index() -> ResponseReturnValue:
    return send_from_directory(STATIC, "index.html", mimetype="text/html")


@bp.route("/console/<path:name>", methods=["GET"])
def console_file(name: str) -> ResponseReturnValue:
    """A file of the console; send_from_directory refuses paths that leave the folder."""
    return send_from_directory(STATIC, name)
