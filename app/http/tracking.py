"""Tracking routes: /t/c (click: redirect), /t/o (open: a pixel), /t/u (unsubscribe)."""

from __future__ import annotations

import base64
from html import escape

from flask import Blueprint, Response, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from app.http.context import current_gateway
from commands import tracking
from commands.tracking import Visitor

bp = Blueprint("tracking", __name__, url_prefix="/t")

# A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0, private",
    "Pragma": "no-cache",
    "Expires": "0",
}


def _visitor() -> Visitor:
    return Visitor(request.remote_addr, request.headers.get("User-Agent", ""))


def _not_found() -> Response:
    return _page(
        "Link not found",
        "<p>This link is not valid (it may have been copied incompletely).</p>",
        404,
    )


def _page(title: str, body: str, status: int = 200) -> Response:
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{escape(title)}</title></head>"
        '<body style="font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em">'
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )
    return Response(html, status, headers=NO_CACHE, mimetype="text/html")


@bp.route("/c/<signed>", methods=["GET"])  # and HEAD, which records nothing
def click(signed: str) -> BaseResponse:
    url = tracking.click(current_gateway(), signed, _visitor(), record=request.method == "GET")
    if url is None:
        return _not_found()
    resp = redirect(url, 302)
    resp.headers.update(NO_CACHE)
    return resp


@bp.route("/o/<signed>.gif", methods=["GET"])
def pixel(signed: str) -> Response:
    if not tracking.open_(current_gateway(), signed, _visitor(), record=request.method == "GET"):
        return _not_found()
    return Response(PIXEL, 200, headers=NO_CACHE, mimetype="image/gif")


@bp.route("/u/<signed>", methods=["GET", "POST"])
def unsubscribe(signed: str) -> Response:
    """GET shows a page with a button (link scanners follow GETs); any POST unsubscribes:
    the button's, or a mail client's RFC 8058 one-click POST."""
    gateway = current_gateway()
    if request.method == "GET":
        who = tracking.recipient(gateway, signed)
        if who is None:
            return _not_found()
        return _page(
            "Unsubscribe",
            f"<p>Stop mail from {escape(who.domain_name)} to {escape(who.email)}?</p>"
            '<form method="post">'
            '<input type="hidden" name="List-Unsubscribe" value="Unsubscribe">'
            '<button type="submit">Unsubscribe</button></form>',
        )
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    who = tracking.unsubscribe(gateway, signed, _visitor(), one_click=one_click)
    if who is None:
        return _not_found()
    return _page(
        "Unsubscribed",
        f"<p>{escape(who.email)} will get no more mail from {escape(who.domain_name)}.</p>",
    )
