"""The gateway and settings an application serves, kept in its Flask extensions."""

from __future__ import annotations

from flask import Flask, current_app

from commands import Gateway
from core.settings import Config

GATEWAY = "postern.gateway"
CONFIG = "postern.config"


def install(app: Flask, config: Config, gateway: Gateway) -> None:
    """Give ``app`` its settings and gateway."""
    app.extensions[CONFIG] = config
    app.extensions[GATEWAY] = gateway


def current_gateway() -> Gateway:
    """The gateway of the application handling the current request."""
    gateway: Gateway = current_app.extensions[GATEWAY]
    return gateway
