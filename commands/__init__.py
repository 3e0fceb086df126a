"""The gateway: one handler per command, registered by name with its schema and auth rule.

Importing this package registers every command.
"""

from . import (  # noqa: F401  (importing a module registers its commands)
    domains,
    event_log,
    queue,
    sender_keys,
    sending,
    smtp_credentials,
    stats,
    suppression,
    users,
    webhooks,
)
from .errors import CommandError
from .gateway import Gateway
from .registry import Auth, all_commands, command, find

__all__ = ["Auth", "CommandError", "Gateway", "all_commands", "command", "find"]
