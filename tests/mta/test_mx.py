"""MX lookup against the loopback DNS server: preference order, implicit and null MX, errors."""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.rcode
import dns.resolver
import pytest

from mta.mx import (
    NoMailRoute,
    NoSuchDomain,
    NullMX,
    RouteError,
    TemporaryDNSError,
    resolve_addresses,
    resolve_mx,
)
from tests import dnsserver

dns_server = dnsserver.dns_server


def resolver_for(port: int, lifetime: float = 3) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.lifetime = lifetime
    resolver.timeout = lifetime
    resolver.cache = None
    return resolver


@pytest.fixture
def resolver(dns_server):
    return resolver_for(dns_server.port)


def test_preference_order(dns_server, resolver):
    dns_server.add("example.com", "MX", "30 c.example.net")
    dns_server.add("example.com", "MX", "10 a.example.net")
    dns_server.add("example.com", "MX", "20 B.Example.NET.")
    assert resolve_mx("example.com", resolver) == [
        "a.example.net",
        "b.example.net",
        "c.example.net",
    ]
    assert resolve_mx("Example.COM.", resolver) == [
        "a.example.net",
        "b.example.net",
        "c.example.net",
    ]


def test_ties_in_random_order(dns_server, resolver):
    for host in ("a", "b", "c"):
        dns_server.add("example.com", "MX", f"10 {host}.example.net")
    dns_server.add("example.com", "MX", "5 first.example.net")
    dns_server.add("example.com", "MX", "50 last.example.net")
    seen = set()
    for _ in range(40):
        hosts = resolve_mx("example.com", resolver)
        assert hosts[0] == "first.example.net"
        assert hosts[-1] == "last.example.net"
        assert sorted(hosts[1:4]) == ["a.example.net", "b.example.net", "c.example.net"]
        seen.add(tuple(hosts[1:4]))
    assert len(seen) > 1  # 40 draws of 6 orders all alike: about 1 in 10^30


def test_host_listed_twice_keeps_its_best_preference(dns_server, resolver):
    dns_server.add("example.com", "MX", "10 a.example.net")
    dns_server.add("example.com", "MX", "20 b.example.net")
    dns_server.add("example.com", "MX", "30 A.example.net")
    assert resolve_mx("example.com", resolver) == ["a.example.net", "b.example.net"]


def test_mx_through_cname(dns_server, resolver):
    dns_server.add("mail.example.com", "CNAME", "example.org")
    dns_server.add("example.org", "MX", "10 mx.example.org")
    assert resolve_mx("mail.example.com", resolver) == ["mx.example.org"]


def test_implicit_mx_from_a(dns_server, resolver):
    dns_server.add("example.com", "A", "192.0.2.1")
    dns_server.add("example.com", "TXT", "v=spf1 -all")
    assert resolve_mx("example.com", resolver) == ["example.com"]


def test_implicit_mx_from_aaaa(dns_server, resolver):
    dns_server.add("example.com", "AAAA", "2001:db8::1")
    assert resolve_mx("example.com", resolver) == ["example.com"]
    assert dns_server.queries[-3:] == [
        ("example.com", "MX"),
        ("example.com", "A"),
        ("example.com", "AAAA"),
    ]


def test_no_mx_and_no_address_is_permanent(dns_server, resolver):
    dns_server.add("example.com", "TXT", "hello")
    with pytest.raises(NoMailRoute) as info:
        resolve_mx("example.com", resolver)
    assert info.value.permanent
    assert "example.com" in str(info.value)


def test_null_mx(dns_server, resolver):
    dns_server.add("example.com", "MX", "0 .")
    dns_server.add("example.com", "A", "192.0.2.1")  # no implicit MX with a null MX
    with pytest.raises(NullMX) as info:
        resolve_mx("example.com", resolver)
    assert isinstance(info.value, RouteError)
    assert info.value.permanent
    assert info.value.message == "domain example.com does not accept mail (null MX)"


def test_null_mx_among_others_is_ignored(dns_server, resolver):
    dns_server.add("example.com", "MX", "0 .")
    dns_server.add("example.com", "MX", "10 mx.example.com")
    assert resolve_mx("example.com", resolver) == ["mx.example.com"]


def test_nxdomain(dns_server, resolver):
    dns_server.add("example.com", "MX", "10 mx.example.com")
    with pytest.raises(NoSuchDomain) as info:
        resolve_mx("nowhere.example.com", resolver)
    assert info.value.permanent
    assert info.value.message == "domain nowhere.example.com does not exist (NXDOMAIN)"


@pytest.mark.parametrize("domain", ["", ".", "a..b", "x" * 64 + ".com"])
def test_invalid_domain_is_permanent(dns_server, resolver, domain):
    with pytest.raises(NoSuchDomain) as info:
        resolve_mx(domain, resolver)
    assert info.value.permanent
    assert dns_server.queries == []


def test_timeout_is_temporary(dns_server):
    dns_server.add("slow.example", "MX", "10 mx.slow.example")
    dns_server.silence("slow.example")
    with pytest.raises(TemporaryDNSError) as info:
        resolve_mx("slow.example", resolver_for(dns_server.port, lifetime=0.5))
    assert not info.value.permanent
    assert info.value.message == "DNS lookup of MX records for slow.example timed out"


def test_timeout_of_implicit_mx_lookup_is_temporary(dns_server):
    """The MX query answered NODATA, the A query times out."""
    dns_server.add("example.com", "TXT", "hello")
    dns_server.add("www.example.com", "A", "192.0.2.1")
    resolver = resolver_for(dns_server.port, lifetime=0.5)
    resolve_mx("www.example.com", resolver)  # NODATA for MX, then A: fine
    dns_server.silence("example.com")
    with pytest.raises(TemporaryDNSError):
        resolve_mx("example.com", resolver)


@pytest.fixture
def servfail_server():
    """A nameserver on loopback UDP that answers SERVFAIL to everything."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                wire, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            response = dns.message.make_response(dns.message.from_wire(wire))
            response.set_rcode(dns.rcode.SERVFAIL)
            sock.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    done.set()
    thread.join()
    sock.close()


def test_servfail_is_temporary(servfail_server):
    resolver = resolver_for(servfail_server)
    with pytest.raises(TemporaryDNSError) as info:
        resolve_mx("example.com", resolver)
    assert "SERVFAIL" in info.value.message
    with pytest.raises(TemporaryDNSError):
        resolve_addresses("mx.example.com", resolver)


def test_resolve_addresses_ipv4_then_ipv6(dns_server, resolver):
    dns_server.add("mx.example.com", "AAAA", "2001:db8::25")
    dns_server.add("mx.example.com", "A", "192.0.2.25")
    dns_server.add("mx.example.com", "A", "192.0.2.26")
    addresses = resolve_addresses("mx.example.com", resolver)
    assert sorted(addresses[:2]) == ["192.0.2.25", "192.0.2.26"]
    assert addresses[2:] == ["2001:db8::25"]


def test_resolve_addresses_one_family(dns_server, resolver):
    dns_server.add("v6.example.com", "AAAA", "2001:db8::25")
    dns_server.add("v4.example.com", "A", "192.0.2.25")
    assert resolve_addresses("v6.example.com", resolver) == ["2001:db8::25"]
    assert resolve_addresses("v4.example.com.", resolver) == ["192.0.2.25"]


def test_resolve_addresses_through_cname(dns_server, resolver):
    dns_server.add("mx.example.com", "CNAME", "real.example.net")
    dns_server.add("real.example.net", "A", "192.0.2.80")
    assert resolve_addresses("mx.example.com", resolver) == ["192.0.2.80"]


@pytest.mark.parametrize(
    ("literal", "expected"),
    [("192.0.2.7", "192.0.2.7"), ("[192.0.2.7]", "192.0.2.7"), ("2001:DB8::1", "2001:db8::1")],
)
def test_resolve_addresses_ip_literal(dns_server, resolver, literal, expected):
    assert resolve_addresses(literal, resolver) == [expected]
    assert dns_server.queries == []


def test_resolve_addresses_errors(dns_server):
    dns_server.add("example.com", "TXT", "hello")
    dns_server.add("slow.example.com", "A", "192.0.2.1")
    dns_server.silence("slow.example.com")
    resolver = resolver_for(dns_server.port, lifetime=0.5)
    with pytest.raises(NoSuchDomain):
        resolve_addresses("mx.nowhere.example", resolver)
    with pytest.raises(NoMailRoute) as info:
        resolve_addresses("example.com", resolver)
    assert info.value.message == "mail host example.com has no A or AAAA records"
    with pytest.raises(TemporaryDNSError):
        resolve_addresses("slow.example.com", resolver)
