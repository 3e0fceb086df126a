"""The Flask application factory: routes, request ids, request logging and error rendering."""

from __future__ import annotations

import logging
import re
import secrets
import time

from flask import Flask, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from app import metrics
from app.http import envelope, freshmail, infobip, postal
from app.http.context import install
from app.logs import configure_logging
from commands import Gateway
from commands.errors import INTERNAL_ERROR
from core.settings import Config

log = logging.getLogger("postern.http")

FRESHMAIL_PREFIX = "/v3/"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def create_app(config: Config, gateway: Gateway | None = None) -> Flask:
    configure_logging(config.log.level, config.log.format)
    app = Flask("postern")
    app.config["MAX_CONTENT_LENGTH"] = config.http.max_body_bytes
    if config.http.proxy_hops:
        hops = config.http.proxy_hops
        # Flask's documented way to wrap its WSGI app; mypy sees a method replaced.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    install(app, config, gateway or Gateway(config))
    metrics.install()

    from app.http import infobip_reports  # noqa: F401  (its routes are on infobip's bp)
    from app.http.api_php import bp as api_php_bp
    from app.http.api_v1 import bp as api_v1_bp
    from app.http.console import bp as console_bp
    from app.http.freshmail import bp as freshmail_bp
    from app.http.health import bp as health_bp
    from app.http.infobip import bp as infobip_bp
    from app.http.jwks import bp as jwks_bp
    from app.http.openapi import bp as openapi_bp
    from app.http.postal import bp as postal_bp
    from app.http.tracking import bp as tracking_bp

    app.register_blueprint(api_php_bp)
    app.register_blueprint(api_v1_bp)
    app.register_blueprint(console_bp)
    app.register_blueprint(freshmail_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(infobip_bp)
    app.register_blueprint(jwks_bp)
    app.register_blueprint(openapi_bp)
    app.register_blueprint(postal_bp)
    app.register_blueprint(tracking_bp)

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(16)
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        rule = request.url_rule
        metrics.http_request(
            request.method,
            rule.rule if rule is not None else None,
            response.status_code,
            time.perf_counter() - g.get("started", time.perf_counter()),
        )
        if not log.isEnabledFor(logging.INFO):
            return response
        # The path only: a query string may carry an APIKey or SessionID.
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(
                    (time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2
                ),
                "request_id": g.get("request_id"),
                "remote_addr": request.remote_addr,
            },
        )
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
        if request.path == "/api.php":
            return envelope.render(
                envelope.failure(exc.code or 400, exc.description or exc.name),
                request.args.get("ResponseFormat"),
                exc.code or 400,
            )
        if request.path.startswith(FRESHMAIL_PREFIX):
            return freshmail.http_error(exc.code or 400, exc.description or exc.name)
        if postal.is_postal_path(request.path):
            return postal.http_error(exc.code or 400, exc.description or exc.name)
        if request.path.startswith(infobip.PREFIX):
            return infobip.http_error(exc.code or 400, exc.description or exc.name)
        # Flask hands this handler only exceptions with a code (it returns the others as
        # they are); 400 stands in for the type checker's None.
        return jsonify(
            {"Errors": [{"Code": exc.code, "Message": exc.description}]}
        ), exc.code or 400

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> ResponseReturnValue:
        request_id = g.get("request_id", "")
        log.exception("unhandled error", extra={"request_id": request_id, "path": request.path})
        text = f"Internal error; quote request id {request_id} when reporting it"
        if request.path.startswith(FRESHMAIL_PREFIX):
            return freshmail.http_error(500, text)
        if postal.is_postal_path(request.path):
            return postal.http_error(500, text)
        if request.path.startswith(infobip.PREFIX):
            return infobip.http_error(500, text)
        if request.path == "/api.php":
            return envelope.render(
                envelope.failure(INTERNAL_ERROR, text, RequestID=request_id),
                request.args.get("ResponseFormat"),
                500,
            )
        return jsonify({"Errors": [{"Code": 500, "Message": text}], "RequestID": request_id}), 500

    return app
