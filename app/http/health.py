"""GET /healthz (the process is up and its database answers), GET /readyz (this instance can
do its work) and GET /metrics (Prometheus's text format)."""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError

from app import metrics
from app.http.context import current_gateway
from commands.health import readiness

bp = Blueprint("health", __name__)
log = logging.getLogger("postern.http")


@bp.route("/healthz", methods=["GET"])
def healthz() -> ResponseReturnValue:
    try:
        current_gateway().db.ping()
    except SQLAlchemyError as exc:
        log.warning("health check: database does not answer", extra={"error": type(exc).__name__})
        return jsonify({"Status": "error", "Database": "unreachable"}), 503
    return jsonify({"Status": "ok", "Database": "ok"})


@bp.route("/readyz", methods=["GET"])
def readyz() -> ResponseReturnValue:
    """200 when the database answers, its schema is current and a delivery worker reported
    within a minute; else 503, naming each check that failed."""
    gateway = current_gateway()
    found = readiness(gateway.db, gateway.clock())
    failed = sorted(k for k, v in found.checks.items() if v != "ok")
    body = {"Status": "ok" if found.ready else "error", "Checks": found.checks, "Failed": failed}
    return jsonify(body), 200 if found.ready else 503


def _token_given(expected: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), expected.encode()
    )


@bp.route("/metrics", methods=["GET"])
def metrics_text() -> ResponseReturnValue:
    gateway = current_gateway()
    token = gateway.config.metrics.token
    if token and not _token_given(token):
        response = jsonify(
            {"Errors": [{"Code": 401, "Message": "A valid bearer token is required"}]}
        )
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return Response(metrics.render(gateway), content_type=metrics.CONTENT_TYPE_LATEST)
