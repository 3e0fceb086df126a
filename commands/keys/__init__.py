"""Credentials of a sender domain: API keys (Bearer) and SMTP credentials."""

from commands.keys import sender_keys, smtp_credentials  # noqa: F401  (registers the commands)
