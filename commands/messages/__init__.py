"""Reading one message as the vendor APIs show it (Postal's messages/message, deliveries)."""

from commands.messages import postal  # noqa: F401  (registers the commands)
