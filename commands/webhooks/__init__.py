"""Webhooks: their commands, the fan-out of events into deliveries, and the signed payload."""

from commands.webhooks import handlers  # noqa: F401  (registers the commands)
