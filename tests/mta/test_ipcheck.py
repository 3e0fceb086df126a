"""Public addresses: IPv4 carried in IPv6 is judged as the IPv4 it carries."""

import ipaddress

import pytest

from mta.ipcheck import carried_ipv4, is_public, is_public_text


def teredo(server: str, client: str) -> str:
    """The Teredo address of ``client`` behind ``server`` (RFC 4380: the client obfuscated)."""
    s = int(ipaddress.IPv4Address(server))
    c = int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (s << 64) | c))


# Each form of each address that must not be contacted.
REFUSED_V4 = ["127.0.0.1", "10.1.2.3", "192.168.0.5", "169.254.169.254", "100.64.0.1", "0.0.0.0"]


def forms(v4: str) -> list[str]:
    n = int(ipaddress.IPv4Address(v4))
    return [
        v4,
        f"::ffff:{v4}",  # IPv4-mapped
        str(ipaddress.IPv6Address(n)) if n > 1 else f"::{v4}",  # IPv4-compatible (::7f00:1)
        str(ipaddress.IPv6Address((0x0064FF9B << 96) | n)),  # NAT64 64:ff9b::/96
        str(ipaddress.IPv6Address((0x0064FF9B0001 << 80) | n)),  # local-use NAT64
        str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80))),  # 6to4
        teredo("8.8.8.8", v4),  # Teredo: a public server, this client
    ]


@pytest.mark.parametrize("v4", REFUSED_V4)
def test_every_form_of_a_private_ipv4_is_refused(v4):
    for form in forms(v4):
        assert not is_public_text(form), form


def test_the_seen_forms():
    for address in ("::7f00:1", "64:ff9b::7f00:1", "2002:7f00:1::", "::ffff:127.0.0.1"):
        assert not is_public_text(address), address
    assert carried_ipv4(ipaddress.ip_address("::7f00:1")) == [ipaddress.IPv4Address("127.0.0.1")]
    assert not is_public_text(teredo("127.0.0.1", "8.8.8.8"))  # a private Teredo server
    assert not is_public_text(teredo("8.8.8.8", "127.0.0.1"))


def test_public_addresses_and_what_carries_them_are_allowed():
    for address in (
        "8.8.8.8",
        "93.184.216.34",
        "2606:4700:4700::1111",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "::ffff:8.8.8.8",
    ):
        assert is_public_text(address), address


def test_other_special_addresses():
    for address in ("::1", "::", "fe80::1", "fc00::1", "ff02::1", "224.0.0.1", "not an ip"):
        assert not is_public_text(address), address
    assert is_public(ipaddress.ip_address("1.1.1.1"))
