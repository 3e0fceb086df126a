"""GET /.well-known/jwks.json: the public key that signs Postal-format webhooks, as a JWKS."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue

from app.http.context import current_gateway
from commands.webhooks.postal import SignerCache

bp = Blueprint("jwks", __name__)


@bp.record_once
def _cache(state: BlueprintSetupState) -> None:
    """One parsed key per application (see SignerCache)."""
    state.app.extensions["postern.postal_signer"] = SignerCache()


@bp.route("/.well-known/jwks.json", methods=["GET"])
def jwks() -> ResponseReturnValue:
    gateway = current_gateway()
    cache: SignerCache = current_app.extensions["postern.postal_signer"]
    response = jsonify(cache.get(gateway.db, gateway.box, gateway.config).jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
