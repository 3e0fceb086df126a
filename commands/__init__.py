"""The gateway: one handler per command, registered by name with its schema and auth rule.

Importing this package registers every command (each feature package imports its handlers).
"""

from commands import (  # noqa: F401
    admin,
    domains,
    events,
    keys,
    messages,
    sending,
    suppression,
    templates,
    users,
    webhooks,
)
from commands.errors import CommandError
from commands.gateway import Gateway
from commands.registry import Auth, all_commands, command, find

__all__ = ["Auth", "CommandError", "Gateway", "all_commands", "command", "find"]
