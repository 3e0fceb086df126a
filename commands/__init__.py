"""The gateway: one handler per command, registered by name with its schema and auth rule.

Importing this package registers every command.
"""

from . import users  # noqa: F401  (registers the User.* commands)
from .errors import CommandError
from .gateway import Gateway
from .registry import Auth, all_commands, command, find

__all__ = ["Auth", "CommandError", "Gateway", "all_commands", "command", "find"]
