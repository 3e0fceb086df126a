"""The event log: writing events with their daily counts, searching them, statistics."""

from commands.events import log, stats  # noqa: F401  (registers the commands)
