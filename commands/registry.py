"""The command registry: each command registers name, schema and auth rule beside its handler."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from marshmallow import Schema

# A handler takes the Context and the schema's loaded values as keywords, and answers the
# command's response fields.
Handler = Callable[..., dict[str, Any]]
H = TypeVar("H", bound=Handler)


class Auth(enum.Enum):
    """Who may run a command."""

    PUBLIC = "public"  # no credentials (User.Login)
    USER = "user"  # a SessionID or user APIKey of an enabled user
    ADMIN = "admin"  # as USER, and the user is an administrator
    SENDER = "sender"  # a sender-domain API key (the /api/v1 routes)


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    schema: type[Schema]
    auth: Auth
    readonly: bool
    # "api.php" commands are reachable through /api.php; "v1" ones only through /api/v1 routes.
    transport: str = "api.php"
    # Octeth answers some commands' errors with ErrorCode as a one-element list.
    error_list: bool = False
    # Sends: an Idempotency-Key given by the transport is honoured (commands/idempotency.py).
    idempotent: bool = False


class DuplicateCommand(Exception):
    pass


_REGISTRY: dict[str, Command] = {}


def command(
    name: str,
    *,
    schema: type[Schema],
    auth: Auth,
    readonly: bool = False,
    transport: str = "api.php",
    error_list: bool = False,
    idempotent: bool = False,
) -> Callable[[H], H]:
    """Register the decorated function as the handler of ``name``.

    ``readonly`` commands run in a read transaction; ``idempotent`` ones honour an
    Idempotency-Key (``Gateway.run``). A second registration of the same
    name (in any letter case) fails at import.
    """
    if transport not in ("api.php", "v1"):
        raise ValueError(f"{name}: unknown transport {transport!r}")
    if not isinstance(auth, Auth):
        raise TypeError(f"{name}: auth must be an Auth rule")
    if not (isinstance(schema, type) and issubclass(schema, Schema)):
        raise TypeError(f"{name}: schema must be a marshmallow Schema class")

    def register(handler: H) -> H:
        key = name.lower()
        if key in _REGISTRY:
            raise DuplicateCommand(f"command {name} is registered twice")
        _REGISTRY[key] = Command(
            name, handler, schema, auth, readonly, transport, error_list, idempotent
        )
        return handler

    return register


def find(name: str | None, transport: str = "api.php") -> Command | None:
    """The command registered under ``name`` for ``transport``, matched case-insensitively."""
    if not name or not isinstance(name, str):
        return None
    cmd = _REGISTRY.get(name.strip().lower())
    return cmd if cmd is not None and cmd.transport == transport else None


def all_commands() -> list[Command]:
    return sorted(_REGISTRY.values(), key=lambda c: c.name)
