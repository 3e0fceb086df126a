"""Running a command with the key a vendor API's request carries: a sender key, else a user
API key (FreshMail, Postal and Infobip take either where Octeth's /api/v1 takes a sender key).

A sender key's request counts against that key's rate limit in the command's transaction
(``Gateway.run_limited``); a user key's against the user's limit (``limit_user``). The
command is registered twice: ``<name>`` (Auth.SENDER) and ``<name>AsUser`` (Auth.USER).
"""

from __future__ import annotations

from typing import Any

from flask import request

from app.http.context import current_gateway
from commands import find
from commands.errors import CommandError
from commands.keys.sender_keys import INVALID_ACCOUNT
from commands.ratelimit import api_bucket


class DisabledAccount(Exception):
    """The key is a sender key of a disabled user."""


def run_with_key(
    name: str, params: dict[str, Any], key: str, *, as_user: str | None = None
) -> dict[str, Any]:
    """The fields of command ``name`` run with ``key`` as a sender key, else of ``as_user``
    (``<name>AsUser`` by default) with it as a user API key; CommandError, RateLimited or
    DisabledAccount otherwise."""
    gateway = current_gateway()
    idempotency_key = request.headers.get("Idempotency-Key")
    try:
        sender = gateway.authenticate_sender(key)
    except CommandError as exc:
        if exc.code == INVALID_ACCOUNT[0]:
            raise DisabledAccount from None
        sender = None
    if sender is not None:
        cmd = find(name, "v1")
        assert cmd is not None, name
        fields, _decision = gateway.run_limited(
            cmd,
            params,
            api_bucket(sender.key_digest),
            remote_addr=request.remote_addr,
            sender=sender,
            idempotency_key=idempotency_key,
        )
        return fields
    cmd = find(as_user or f"{name}AsUser", "v1")
    assert cmd is not None, name
    return gateway.run(
        cmd,
        {**params, "APIKey": key},
        remote_addr=request.remote_addr,
        limit_user=True,
        idempotency_key=idempotency_key,
    )
