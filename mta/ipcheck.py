"""Which addresses Postern may contact on a user's behalf (webhooks, MX hosts).

An address is public when it is global unicast (``ipaddress``'s ``is_global``, and not
multicast). An IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``,
IPv4-compatible ``::a.b.c.d``, 6to4 ``2002::/16``, Teredo ``2001::/32``, NAT64
``64:ff9b::/96`` and the local-use ``64:ff9b:1::/48``) is judged by the IPv4 it carries
(both of Teredo's), so ``::7f00:1`` is loopback as ``127.0.0.1`` is.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_COMPATIBLE = ipaddress.ip_network("::/96")


def carried_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (none for IPv4 or plain IPv6)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return []
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    if any(ip in net for net in _NAT64) or (ip in _COMPATIBLE and int(ip) > 1):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return []


def _global(ip: IPAddress) -> bool:
    return ip.is_global and not ip.is_multicast


def is_public(ip: IPAddress) -> bool:
    """Whether ``ip`` is a public unicast address (judged by the IPv4 it carries, if any)."""
    carried = carried_ipv4(ip)
    if carried:
        return all(_global(v4) for v4 in carried)
    return _global(ip)


def is_public_text(address: str) -> bool:
    """``is_public`` for an address written as text; False when it is not an address."""
    try:
        return is_public(ipaddress.ip_address(address))
    except ValueError:
        return False
