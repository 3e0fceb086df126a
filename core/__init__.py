"""Postern's kernel: typed settings, secrets and tokens, password hashing, the clock.

Nothing here imports any other part of Postern.
"""
