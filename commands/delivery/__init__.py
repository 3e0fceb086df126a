"""Delivery seen from the gateway: mail coming back to Postern (bounces, complaints)."""
