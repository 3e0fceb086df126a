"""Sender domains: their commands, DKIM key pairs and the DNS records they must publish."""

from commands.domains import handlers  # noqa: F401  (registers the commands)
