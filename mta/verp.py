"""VERP both ways: each delivery's return path names it, and a bounce to it is traced back.

A delivery's return path is ``b-<token>@<subdomain>.<domain>`` with its 32-hex-digit token.
"""

from __future__ import annotations

import re


def verp_address(token: str, subdomain: str, domain: str) -> str:
    """The return path of one delivery: a bounce to it names the delivery."""
    return f"b-{token}@{subdomain}.{domain}"


VERP_PATTERN = re.compile(r"b-([0-9a-f]{32})@[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?", re.IGNORECASE)


def verp_token(address: str) -> str | None:
    """The delivery token of a VERP address `b-<32 hex>@host` (case-insensitive), else None."""
    if not isinstance(address, str):
        return None
    a = address.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1].strip()
    m = VERP_PATTERN.fullmatch(a)
    return m.group(1).lower() if m else None
