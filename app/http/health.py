"""GET /healthz: whether the process is up and its database answers."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError

from app.http.context import current_gateway

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
