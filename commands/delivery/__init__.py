"""Delivery seen from the gateway: the queue, building claimed deliveries, recording their
outcomes, holding and releasing, and mail coming back to Postern (bounces, complaints)."""

from commands.delivery import handlers  # noqa: F401  (registers the commands)
