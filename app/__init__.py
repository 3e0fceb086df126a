"""Postern's HTTP side: configuration, the Flask factory and the transports.

Importing this package does not import Flask; the factory lives in ``app.factory``.
"""
