"""GET /.well-known/jwks.json: the public key that signs Postal-format webhooks, as a JWKS."""

from __future__ import annotations

import threading

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from app.http.context import current_gateway
from commands.webhooks.postal import PostalSigner, load_signer

bp = Blueprint("jwks", __name__)

_lock = threading.Lock()
_EXTENSION = "postern.postal_signer"


def app_signer() -> PostalSigner:
    """The installation's Postal signing key, read (or made) once per application."""
    with _lock:
        signer: PostalSigner | None = current_app.extensions.get(_EXTENSION)
        if signer is None:
            gateway = current_gateway()
            signer = load_signer(gateway.db, gateway.box, gateway.config)
            current_app.extensions[_EXTENSION] = signer
        return signer


@bp.route("/.well-known/jwks.json", methods=["GET"])
def jwks() -> ResponseReturnValue:
    response = jsonify(app_signer().jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
